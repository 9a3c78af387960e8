"""Rendering: the header describing the run and the one results table."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import sys
from importlib import metadata

from rich.console import Console
from rich.table import Table
from rich.text import Text

from benchmarks import peer
from benchmarks.common import event_size, payloads
from benchmarks.workloads import Outcome, milliseconds


def console() -> Console:
    """A console wide enough for the table even when output goes to a file or pipe."""
    out = Console()
    return out if out.is_terminal else Console(width=150)


def environment() -> str:
    """One line saying what ran where."""
    return (
        f"{dt.date.today():%Y-%m-%d} · {platform.system()} {platform.machine()},"
        f" {os.cpu_count()} CPUs · Python {platform.python_version()}"
        f" · SQLite {sqlite3.sqlite_version} · eskit {metadata.version('eskit')}"
        f" · event JSON {event_size(payloads(1)[0])} bytes (data + metadata)"
    )


def _result(outcome: Outcome) -> Text:
    if not outcome.count_ok:
        return Text("WRONG COUNT", style="bold red")
    met = outcome.met
    if met is None:
        return Text("n/a", style="dim")
    return Text("met", style="green") if met else Text("missed", style="red")


def table(outcomes: list[Outcome], repeat: int) -> Table:
    """Speed of eskit and of its raw baseline, their ratio and the target, one row each."""
    best = "one run" if repeat == 1 else f"best of {repeat}"
    backends = dict.fromkeys(o.workload.backend for o in outcomes)
    t = Table(
        title=f"eskit vs raw baselines ({'; '.join(backends)}) — {best}",
        caption_justify="left",
    )
    t.add_column("workload")
    t.add_column("what")
    t.add_column("eskit", justify="right")
    t.add_column("raw", justify="right")
    t.add_column("unit")
    t.add_column("eskit/raw", justify="right")
    t.add_column("target", justify="right")
    t.add_column("result")
    notes = ["eskit/raw compares speeds: above 1.00 eskit is faster, whatever the unit."]
    raw_notes: dict[str, list[str]] = {}
    by_name = {o.workload.name: o for o in outcomes}
    for o in outcomes:
        w = o.workload
        t.add_row(
            w.name,
            w.what,
            w.unit.show(o.eskit),
            w.unit.show(o.raw),
            w.unit.label,
            f"{o.ratio:.2f}",
            w.target.label,
            _result(o),
        )
        raw_notes.setdefault(w.raw_note, []).append(w.name)
        if not o.count_ok:
            notes.append(
                f"{w.name}: expected {w.expected:,} {w.unit.counted}, eskit handled"
                f" {o.eskit.count:,}, raw {o.raw.count:,}."
            )
        other = by_name.get(w.relative_to or "")
        if other is not None:
            mine, theirs = o.eskit.ms_each, other.eskit.ms_each
            notes.append(
                f"{w.name}: eskit takes {mine / theirs:.2f} times the time of {other.workload.name}"
                f" ({milliseconds(mine)} vs {milliseconds(theirs)} {w.unit.label}, same run)."
            )
    latencies = [o.workload.name for o in outcomes if o.workload.unit.percentiles]
    if latencies:
        notes.append(
            f"{', '.join(latencies)}: ms per item, median / 99th percentile; eskit/raw compares"
            " the medians; the best run is the one with the lowest p99."
        )
    notes[1:1] = [f"{', '.join(names)} raw: {note}." for note, names in raw_notes.items()]
    t.caption = "\n".join(notes)
    return t


def print_results(outcomes: list[Outcome], repeat: int, out: Console) -> None:
    """Print the results table."""
    out.print()
    out.print(table(outcomes, repeat))


FACE_NAMES: dict[peer.Face, str] = {
    "async": "eskit async",
    "sync": "eskit.sync",
    "peer": "eventsourcing",
    "raw": "raw",
}


def _cell(o: peer.Outcome, face: peer.Face) -> str:
    if isinstance(o.workload.sides[face], str):
        return "n/a"
    m = o.best.get(face)
    return o.workload.unit.show(m) if m is not None else "—"


def _ratio(o: peer.Outcome, face: peer.Face, against: peer.Face) -> str:
    ratio = o.ratio(face, against)
    return "—" if ratio is None else f"{ratio:.2f}"


def _targets(o: peer.Outcome) -> Text:
    if o.wrong():
        return Text(f"WRONG COUNT ({', '.join(o.wrong())})", style="bold red")
    text = Text()
    for i, target in enumerate(o.workload.targets):
        met = o.met(target)
        text.append(("\n" if i else "") + f"{target.label} ")
        text.append("met" if met else "missed", style="green" if met else "red")
    return text if o.workload.targets else Text("—", style="dim")


def peer_table(outcomes: list[peer.Outcome], repeat: int) -> Table:
    """eskit's two faces against the peer and the raw driver, their ratios and the targets."""
    best = "one run" if repeat == 1 else f"best of {repeat}"
    backends = dict.fromkeys(peer.backend_label(o.workload.backend) for o in outcomes)
    t = Table(
        title=f"eskit vs eventsourcing 9.5.6 and raw drivers ({'; '.join(backends)}) — {best}",
        caption_justify="left",
    )
    t.add_column("workload")
    for face in peer.FACES:
        t.add_column(FACE_NAMES[face], justify="right", no_wrap=True)
    t.add_column("unit")
    for name in ("async/peer", "sync/peer", "async/raw", "sync/raw"):
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("targets (issue 13)", no_wrap=True)
    notes = ["Ratios compare speeds: above 1.00 eskit is faster, whatever the unit."]
    for o in outcomes:
        w = o.workload
        t.add_row(
            w.name,
            *(_cell(o, face) for face in peer.FACES),
            w.unit.label,
            _ratio(o, "async", "peer"),
            _ratio(o, "sync", "peer"),
            _ratio(o, "async", "raw"),
            _ratio(o, "sync", "raw"),
            _targets(o),
        )
        notes.append(f"{w.name} — {w.what}: {w.notes}.")
        for face, side in w.sides.items():
            if isinstance(side, str):
                notes.append(f"{w.name} {FACE_NAMES[face]}: n/a ({side}).")
        for face in o.wrong():
            notes.append(
                f"{w.name}: expected {w.expected:,} {w.unit.counted}, {face} handled"
                f" {o.best[face].count:,}."
            )
    t.caption = "\n".join(notes)
    return t


def print_peer_results(outcomes: list[peer.Outcome], repeat: int, out: Console) -> None:
    """Print the peer table."""
    out.print()
    out.print(peer_table(outcomes, repeat))


def print_header(out: Console) -> None:
    """Print what is being run, where."""
    out.print(f"[bold]eskit benchmarks[/] — {environment()}", highlight=False)
    out.print(f"[dim]{sys.executable}[/]", highlight=False)
