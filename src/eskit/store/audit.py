"""Checking the hash chains (``eskit verify``): every event's link recomputed from what is
stored, every stream's versions contiguous, every category column recomputed from its
stream's name, the store's chain start checked against its own hash, and the streams' ends
and the chain start compared with anchors saved earlier, so an event altered, moved,
removed from the middle or cut off the end of a stream is found and named.

From the chain start on, every event must carry a link in the current format (a missing
one was removed); before it, events of a store upgraded from a release without positions
in the links are checked in the old format, and events with no link at all are counted as
predating the chain.

The log is read once in position order, a page at a time; memory grows with the number of
streams (their last version and link), not with the number of events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import msgspec

from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.chain import ChainRow, ChainStart, audit_key
from eskit.store.scavenge import Removal


class Anchor(msgspec.Struct, frozen=True):
    """Where a stream ended when its anchor was saved: its last version and that link."""

    version: int
    hash: str


class Anchors(msgspec.Struct, frozen=True):
    """What an earlier run saw (``--save-anchors``): where each stream ended, and the
    store's chain start."""

    streams: dict[str, Anchor] = msgspec.field(default_factory=dict)
    chain_start: ChainStart | None = None


class Problem(msgspec.Struct, frozen=True):
    stream: str
    """Empty for a problem of the whole store (its chain start)."""
    version: int | None
    position: int | None
    what: str


class AuditReport(msgspec.Struct):
    events: int = 0
    streams: int = 0
    unlinked: int = 0
    """Events written before the store kept a chain (before its chain start): not checked."""
    problems: list[Problem] = msgspec.field(default_factory=list)
    removed: dict[str, int] = msgspec.field(default_factory=dict)
    """Events removed through the audited path (``eskit scavenge``), by reason: their
    recorded links carry each stream's chain across the gap."""
    ends: dict[str, Anchor] = msgspec.field(default_factory=dict)
    """Each stream's last version and link: tomorrow's anchors."""
    chain_start: ChainStart | None = None
    """The store's chain start as recorded (None if the record is missing)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def anchors(self) -> Anchors:
        """Tomorrow's anchors: the streams' ends and the chain start."""
        return Anchors(self.ends, self.chain_start)


class _Stream:
    __slots__ = ("broken", "link", "version")

    def __init__(self) -> None:
        self.version = -1
        self.link: bytes | None = None
        self.broken = False
        """The previous link is gone: the next one cannot be checked, only reported once."""


async def verify(
    store: EventStore,
    *,
    key: bytes | None = None,
    anchors: Anchors | None = None,
    progress: Callable[[int, int], None] | None = None,
    page_size: int = 1000,
) -> AuditReport:
    """Check the chain start and every stream's chain (with ``key``, default
    ``ESKIT_AUDIT_KEY``) and, given ``anchors``, that no stream lost its end and the chain
    start did not move."""
    key = key if key is not None else audit_key()
    head = await store.last_position()
    report, streams = AuditReport(), dict[str, _Stream]()
    anchors = anchors or Anchors()
    report.chain_start = await store._chain_start()
    first = _check_chain_start(report, key, anchors.chain_start)
    ends = anchors.streams
    seen = 0
    async for row in _merged(_chain_rows(store, page_size), _removals(store, page_size)):
        stream = streams.get(row.stream)
        if stream is None:
            stream = streams[row.stream] = _Stream()
        if isinstance(row, Removal):
            _check_removed(row, row.position >= first, stream, ends.get(row.stream), report)
        else:
            _check(row, row.position >= first, stream, key, ends.get(row.stream), report)
        seen += 1
        if progress is not None and seen % page_size == 0:
            progress(row.position, max(head, row.position))
    if progress is not None:
        progress(head, head)
    for name, anchor in ends.items():
        reached = streams.get(name)
        if reached is None or reached.version < anchor.version:
            last = None if reached is None else reached.version
            report.problems.append(
                Problem(
                    name,
                    last,
                    None,
                    f"events removed from the end: the anchor has version {anchor.version},"
                    f" the stream ends at {'nothing' if last is None else last}",
                )
            )
    report.streams = len(streams)
    report.ends = {
        name: Anchor(s.version, s.link.hex()) for name, s in streams.items() if s.link is not None
    }
    return report


async def _chain_rows(store: EventStore, page_size: int) -> AsyncIterator[ChainRow]:
    after = 0
    while True:
        rows = await store._chain_page(after, page_size)
        for row in rows:
            yield row
        if len(rows) < page_size:
            return
        after = rows[-1].position


async def _removals(store: EventStore, page_size: int) -> AsyncIterator[Removal]:
    """The store's removal records in position order (none for a store that keeps none)."""
    scavenger = store.scavenger()
    if scavenger is None:
        return
    try:
        after = 0
        while True:
            rows = await asyncio.to_thread(scavenger.removed_page, after, page_size)
            for row in rows:
                yield row
            if len(rows) < page_size:
                return
            after = rows[-1].position
    finally:
        await asyncio.to_thread(scavenger.close)


async def _merged(
    rows: AsyncIterator[ChainRow], removed: AsyncIterator[Removal]
) -> AsyncIterator[ChainRow | Removal]:
    """Events and removal records, in position order. An event restored from an archive
    (``eskit restore``) is both in the log and recorded as removed: the event counts."""
    row, gone = await anext(rows, None), await anext(removed, None)
    while row is not None or gone is not None:
        if gone is None or (row is not None and row.position <= gone.position):
            assert row is not None
            if gone is not None and gone.position == row.position:
                gone = await anext(removed, None)
            yield row
            row = await anext(rows, None)
        else:
            yield gone
            gone = await anext(removed, None)


def _check_chain_start(report: AuditReport, key: bytes | None, anchored: ChainStart | None) -> int:
    """Check the store's chain start record; the position from which events are checked
    as linked in the current format (the earliest of the record and its anchor)."""
    recorded = report.chain_start
    if recorded is None:
        report.problems.append(
            Problem("", None, None, "no chain start is recorded: the record was removed")
        )
    elif not recorded.holds(key):
        report.problems.append(
            Problem(
                "",
                None,
                recorded.position,
                "the chain start record does not match its hash: moved or forged",
            )
        )
    if anchored is not None and anchored != recorded:
        found = "nothing" if recorded is None else recorded.position
        report.problems.append(
            Problem(
                "",
                None,
                None if recorded is None else recorded.position,
                f"the chain start moved: the anchor has position {anchored.position},"
                f" the store records {found}",
            )
        )
    starts = [start.position for start in (recorded, anchored) if start is not None]
    return min(starts, default=1)


def _check(
    row: ChainRow,
    v2: bool,
    stream: _Stream,
    key: bytes | None,
    anchor: Anchor | None,
    report: AuditReport,
) -> None:
    """Check one row; ``v2``: it is at or after the chain start, so must carry a link in
    the current format."""
    report.events += 1
    where = (row.stream, row.version, row.position)
    category = rules.category(row.stream)
    if row.category != category:
        report.problems.append(
            Problem(
                *where,
                f"the category column says {row.category!r}, the stream's category is {category!r}",
            )
        )
    _check_version(where, stream, report)
    checkable = row.version == stream.version + 1 and not stream.broken
    if row.hash is None:
        if v2 or stream.link is not None or stream.broken:
            report.problems.append(Problem(*where, "the link was removed"))
            stream.broken = True
        else:
            report.unlinked += 1
    else:
        if checkable and row.expected(stream.link, key, v2) != row.hash:
            report.problems.append(Problem(*where, "altered: the link does not match the event"))
        stream.broken = False
    anchored = None if anchor is None or row.version != anchor.version else anchor.hash
    if anchored is not None and (row.hash is None or row.hash.hex() != anchored):
        report.problems.append(Problem(*where, "differs from its anchor"))
    stream.version, stream.link = row.version, row.hash


def _check_removed(
    removal: Removal, v2: bool, stream: _Stream, anchor: Anchor | None, report: AuditReport
) -> None:
    """Count a removed event and carry its stream's chain on with its recorded link (the
    event itself is gone: its link cannot be recomputed). A removal recorded without its
    link (by hand) leaves the next link uncheckable, like a removed link."""
    report.removed[removal.reason] = report.removed.get(removal.reason, 0) + 1
    where = (removal.stream, removal.version, removal.position)
    _check_version(where, stream, report)
    anchored = None if anchor is None or removal.version != anchor.version else anchor.hash
    if anchored is not None and (removal.link is None or removal.link.hex() != anchored):
        report.problems.append(Problem(*where, "differs from its anchor (removed event)"))
    stream.version, stream.link = removal.version, removal.link
    stream.broken = removal.link is None and v2


def _check_version(where: tuple[str, int, int], stream: _Stream, report: AuditReport) -> None:
    version = where[1]
    if version != stream.version + 1:
        what = (
            f"versions {stream.version + 1}..{version - 1} are missing"
            if version > stream.version + 1
            else f"version {version} after version {stream.version}"
        )
        report.problems.append(Problem(*where, what))


def load_anchors(path: Path) -> Anchors:
    """Anchors saved by ``save_anchors``: one JSON object per line, a stream's end
    (``stream``, ``version``, ``hash``) or the chain start (``chain_start``, ``hash``)."""
    streams, chain_start = {}, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            item = json.loads(line)
            if "chain_start" in item:
                chain_start = ChainStart(int(item["chain_start"]), bytes.fromhex(item["hash"]))
            else:
                streams[item["stream"]] = Anchor(int(item["version"]), str(item["hash"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}:{number}: not an anchor line ({error})") from None
    return Anchors(streams, chain_start)


def save_anchors(path: Path, anchors: Anchors) -> None:
    path.write_text("".join(_lines(anchors)))


def _lines(anchors: Anchors) -> Iterable[str]:
    start = anchors.chain_start
    if start is not None:
        yield json.dumps({"chain_start": start.position, "hash": start.hash.hex()}) + "\n"
    ends = anchors.streams
    for stream in sorted(ends):
        anchor = ends[stream]
        yield json.dumps({"stream": stream, "version": anchor.version, "hash": anchor.hash}) + "\n"
