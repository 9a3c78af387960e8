"""eskit against its peer, the ``eventsourcing`` library, and the raw drivers, in one run.

Each peer workload runs up to four sides one after the other, each in a fresh database
(a file in a fresh directory, or a fresh PostgreSQL schema), best of ``--repeat``: eskit's
async face, its blocking face (``eskit.sync``), the peer, and the raw driver. The targets
are issue 13's, ratios within the run: eskit against the peer, or against raw.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from benchmarks import peer_eskit, peer_raw, postgres
from benchmarks.common import Measurement, Payload, payloads
from benchmarks.peer_data import Backend
from benchmarks.workloads import COMMANDS, EVENTS, LOADS, PG_BACKEND, Progress, Unit
from eskit.application.state_cache import STATE_CACHE

Face = Literal["async", "sync", "peer", "raw"]
FACES: tuple[Face, ...] = ("async", "sync", "peer", "raw")
RUN_ORDER: tuple[Face, ...] = ("raw", "peer", "async", "sync")
Run = Callable[[Backend, Path, list[Payload]], Measurement]
COMMANDS_SQLITE = 2_000
COMMANDS_POSTGRES = 1_000
LOAD_EVENTS = 10_000
LOADS_EACH = 5
RAW_COMMAND = "read the stream's rows and decode them, then one row in its own transaction"


@dataclasses.dataclass(frozen=True)
class Target:
    """eskit's ``face`` at least ``times`` the speed of ``against`` (the peer or raw)."""

    face: Literal["async", "sync"]
    against: Literal["peer", "raw"]
    times: float

    @property
    def label(self) -> str:
        who = self.face
        if self.against == "peer":
            return f"{who} ≥ {self.times:g}x peer"
        return f"{who} ≥ {self.times:g} of raw"


@dataclasses.dataclass(frozen=True)
class Workload:
    """One peer workload: what each side runs (or why it cannot), what it counts, targets."""

    name: str
    what: str
    backend: Backend
    size: int
    sides: dict[Face, Run | str]
    """A side's run, or why the side is not available ("n/a" in its cell, the reason below)."""
    notes: str
    unit: Unit = COMMANDS
    count: int | None = None
    targets: tuple[Target, ...] = ()

    @property
    def expected(self) -> int:
        return self.size if self.count is None else self.count

    def unavailable(self) -> str | None:
        """Why the workload cannot run here, or None."""
        if importlib.util.find_spec("eventsourcing") is None:
            return "eventsourcing is not installed (pip install -e '.[bench]')"
        return postgres.unavailable() if self.backend == "postgres" else None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Each side's best measurement (sides that are not available are missing)."""

    workload: Workload
    best: dict[Face, Measurement]

    def ratio(self, face: Face, against: Face) -> float | None:
        """Speed of ``face`` over the speed of ``against``, when both ran."""
        mine, theirs = self.best.get(face), self.best.get(against)
        if mine is None or theirs is None:
            return None
        unit = self.workload.unit
        return unit.speed(mine) / unit.speed(theirs)

    def met(self, target: Target) -> bool:
        """A target is met only by a measured ratio at or above it."""
        ratio = self.ratio(target.face, target.against)
        return ratio is not None and ratio >= target.times

    def wrong(self) -> list[Face]:
        """The sides that did not handle exactly what was expected."""
        return [f for f, m in self.best.items() if m.count != self.workload.expected]


def _peer(name: str, **options: int) -> Run:
    """The peer's side ``name``, imported only when it runs (eventsourcing is optional)."""

    def run(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
        from benchmarks import peer_eventsourcing

        side: Callable[..., Measurement] = getattr(peer_eventsourcing, name)
        return side(backend, directory, items, **options)

    return run


def _existing(
    prefix: str,
    where: str,
    backend: Backend,
    commands: int,
    targets: tuple[Target, ...],
    *,
    cached: bool,
) -> Workload:
    """ES2 / PGES2: commands on existing aggregates, eskit's bus keeping their states
    (its default) and the peer not (its default); cached, ES2c / PGES2c: the same with the
    peer's aggregate cache on, as many aggregates as eskit's bus keeps."""
    peer_side = _peer("existing_aggregates", cache=STATE_CACHE if cached else 0)
    notes = (
        "100 existing aggregates round robin, each command loads one and appends one"
        " event. eskit bus.send(AddInvoiceLine); peer repository.get, add_line,"
        " app.save; raw: " + RAW_COMMAND
    )
    if cached:
        notes = (
            f"{prefix}2 with both sides keeping aggregates between commands: eskit's bus"
            f" (state_cache={STATE_CACHE}, its default), the peer's repository"
            f" (AGGREGATE_CACHE_MAXSIZE={STATE_CACHE}, AGGREGATE_CACHE_FASTFORWARD=y: each"
            " get still reads the events after the kept version). No targets (issue 13's"
            f" are against the peer's defaults, {prefix}2)"
        )
    return Workload(
        f"{prefix}2" + ("c" if cached else ""),
        f"{where}: {commands:,} commands on 100 aggregates"
        + (", both sides' aggregate caches" if cached else ""),
        backend,
        commands,
        {
            "async": peer_eskit.existing_aggregates,
            "sync": peer_eskit.sync_existing_aggregates,
            "peer": peer_side,
            "raw": functools.partial(peer_raw.commands, existing=True),
        },
        notes,
        targets=targets,
    )


def _workloads(prefix: str, backend: Backend) -> tuple[Workload, ...]:
    sqlite = backend == "sqlite"
    commands = COMMANDS_SQLITE if sqlite else COMMANDS_POSTGRES
    where = "SQLite" if sqlite else "PG"
    new: tuple[Target, ...]
    existing: tuple[Target, ...]
    single: tuple[Target, ...]
    if sqlite:
        new = (Target("sync", "peer", 1.5), Target("async", "peer", 1.2))
        existing = (Target("sync", "peer", 2), Target("async", "peer", 2))
        single = (Target("sync", "raw", 0.8), Target("async", "raw", 0.6))
    else:
        new = existing = (Target("sync", "peer", 1.5), Target("async", "peer", 1.5))
        single = (Target("sync", "raw", 0.85),)
    return (
        Workload(
            f"{prefix}1",
            f"{where}: {commands:,} new aggregates",
            backend,
            commands,
            {
                "async": peer_eskit.new_aggregates,
                "sync": peer_eskit.sync_new_aggregates,
                "peer": _peer("new_aggregates"),
                "raw": functools.partial(peer_raw.commands, existing=False),
            },
            "new aggregates one command at a time. eskit bus.send(CreateInvoice); peer"
            " app.save(Invoice(...)); raw: " + RAW_COMMAND,
            targets=new,
        ),
        _existing(prefix, where, backend, commands, existing, cached=False),
        _existing(prefix, where, backend, commands, (), cached=True),
        Workload(
            f"{prefix}3",
            f"{where}: {commands:,} one-event appends",
            backend,
            commands,
            {
                "async": peer_eskit.appends,
                "sync": peer_eskit.sync_appends,
                "peer": _peer("appends"),
                "raw": peer_raw.appends,
            },
            "one event to a new stream per append, one at a time. eskit store.append;"
            " peer recorder.insert_events of one stored event; raw: one"
            + (" row per transaction" if sqlite else " autocommit statement per event (PG1)"),
            unit=EVENTS,
            targets=single,
        ),
        Workload(
            f"{prefix}4",
            f"{where}: load {LOAD_EVENTS:,} events",
            backend,
            LOAD_EVENTS,
            {
                "async": functools.partial(peer_eskit.load, loads=LOADS_EACH),
                "sync": functools.partial(peer_eskit.sync_load, loads=LOADS_EACH),
                "peer": _peer("load", loads=LOADS_EACH),
                "raw": functools.partial(peer_raw.load, loads=LOADS_EACH),
            },
            f"no snapshot, every event read, decoded and applied, mean of {LOADS_EACH} loads."
            " eskit Repository.load; peer app.repository.get; raw: one SELECT of the"
            " stream, decoding data and metadata",
            unit=LOADS,
            count=LOADS_EACH,
        ),
    )


WORKLOADS: tuple[Workload, ...] = (*_workloads("ES", "sqlite"), *_workloads("PGES", "postgres"))


def backend_label(backend: Backend) -> str:
    """How each backend is set up, as the main table's title says it."""
    if backend == "sqlite":
        return "SQLite file, WAL, synchronous=FULL on every side"
    return PG_BACKEND


def measure(
    workload: Workload, face: Face, items: list[Payload], parent: Path | None
) -> Measurement:
    """Run one side once in a fresh temporary directory (and its own fresh schema)."""
    run = workload.sides[face]
    assert not isinstance(run, str)
    with tempfile.TemporaryDirectory(
        prefix=f"eskit-bench-{workload.name}-{face}-", dir=parent
    ) as d:
        return run(workload.backend, Path(d), items)


def run(workload: Workload, repeat: int, parent: Path | None, progress: Progress) -> Outcome:
    """Measure every available side ``repeat`` times, in turn, and keep each side's best."""
    items = payloads(workload.size)
    best: dict[Face, Measurement] = {}
    faces = [f for f in RUN_ORDER if not isinstance(workload.sides[f], str)]
    for i in range(1, repeat + 1):
        for face in faces:
            m = measure(workload, face, items, parent)
            shown = f"{workload.unit.show(m):>12} {workload.unit.label}"
            progress(f"{workload.name} {face:<5} run {i}/{repeat}: {shown}")
            if face not in best or workload.unit.score(m) > workload.unit.score(best[face]):
                best[face] = m
    return Outcome(workload, {f: best[f] for f in FACES if f in best})
