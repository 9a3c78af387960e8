"""Checking the hash chains (``eskit verify``): every event's link recomputed from what is
stored, every stream's versions contiguous, and the streams' ends compared with anchors
saved earlier, so an event altered, removed from the middle or cut off the end of a stream
is found and named.

The log is read once in position order, a page at a time; memory grows with the number of
streams (their last version and link), not with the number of events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import msgspec

from eskit.store.base import EventStore
from eskit.store.chain import ChainRow, audit_key


class Anchor(msgspec.Struct, frozen=True):
    """Where a stream ended when its anchor was saved: its last version and that link."""

    version: int
    hash: str


class Problem(msgspec.Struct, frozen=True):
    stream: str
    version: int | None
    position: int | None
    what: str


class AuditReport(msgspec.Struct):
    events: int = 0
    streams: int = 0
    unlinked: int = 0
    """Events written before the store kept a chain: not checked."""
    problems: list[Problem] = msgspec.field(default_factory=list)
    ends: dict[str, Anchor] = msgspec.field(default_factory=dict)
    """Each stream's last version and link: tomorrow's anchors."""

    @property
    def ok(self) -> bool:
        return not self.problems


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
    anchors: Mapping[str, Anchor] | None = None,
    progress: Callable[[int, int], None] | None = None,
    page_size: int = 1000,
) -> AuditReport:
    """Check every stream's chain (with ``key``, default ``ESKIT_AUDIT_KEY``) and, given
    ``anchors``, that no stream lost its end."""
    key = key if key is not None else audit_key()
    head = await store.last_position()
    report, streams = AuditReport(), dict[str, _Stream]()
    anchors = anchors or {}
    after = 0
    while True:
        rows = await store._chain_page(after, page_size)
        for row in rows:
            stream = streams.get(row.stream)
            if stream is None:
                stream = streams[row.stream] = _Stream()
            _check(row, stream, key, anchors.get(row.stream), report)
        if rows:
            after = rows[-1].position
        if progress is not None:
            progress(after, max(head, after))
        if len(rows) < page_size:
            break
    for name, anchor in anchors.items():
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


def _check(
    row: ChainRow, stream: _Stream, key: bytes | None, anchor: Anchor | None, report: AuditReport
) -> None:
    report.events += 1
    where = (row.stream, row.version, row.position)
    if row.version != stream.version + 1:
        what = (
            f"versions {stream.version + 1}..{row.version - 1} are missing"
            if row.version > stream.version + 1
            else f"version {row.version} after version {stream.version}"
        )
        report.problems.append(Problem(*where, what))
    checkable = row.version == stream.version + 1 and not stream.broken
    if row.hash is None:
        if stream.link is not None or stream.broken:
            report.problems.append(Problem(*where, "the link was removed"))
            stream.broken = True
        else:
            report.unlinked += 1
    else:
        if checkable and row.expected(stream.link, key) != row.hash:
            report.problems.append(Problem(*where, "altered: the link does not match the event"))
        stream.broken = False
    anchored = None if anchor is None or row.version != anchor.version else anchor.hash
    if anchored is not None and row.hash is not None and row.hash.hex() != anchored:
        report.problems.append(Problem(*where, "differs from its anchor"))
    stream.version, stream.link = row.version, row.hash


def load_anchors(path: Path) -> dict[str, Anchor]:
    """Anchors saved by ``save_anchors``: one JSON object per line."""
    anchors = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            item = json.loads(line)
            anchors[item["stream"]] = Anchor(int(item["version"]), str(item["hash"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not an anchor line ({error})") from None
    return anchors


def save_anchors(path: Path, ends: Mapping[str, Anchor]) -> None:
    path.write_text("".join(_lines(ends)))


def _lines(ends: Mapping[str, Anchor]) -> Iterable[str]:
    for stream in sorted(ends):
        anchor = ends[stream]
        yield json.dumps({"stream": stream, "version": anchor.version, "hash": anchor.hash}) + "\n"
