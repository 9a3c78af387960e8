"""What the dashboard's charts and tables show, computed from the store through its public
API and kept in the web process, bounded:

- **throughput**: events appended per minute over the last hour. The store keeps no such
  counts, so they are counted from the log: the first time by reading back from the head
  a window of positions at a time (at most ``SCAN_BUDGET`` events: on a busier store the
  chart starts where the budget ran out and says so), then by reading only the events
  appended since. Memory: one count per minute.
- **lag over time**: each projection's lag, sampled whenever the dashboard asks (every
  couple of seconds while it is open) and by a background task every ``LAG_EVERY``
  seconds from the first admin request on: the last hour, at most ``LAG_KEPT`` samples.
  It starts empty when the server starts (nothing is stored).
- **the biggest streams and categories**: from ``list_streams``, at most
  ``STREAMS_SCANNED`` streams (by name), recounted when the log has grown (at most every
  ``BIGGEST_TTL`` seconds if there are more streams than one query lists).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from eskit.store.base import EventStore
from eskit.store.model import StreamInfo

log = logging.getLogger("eskit.web.admin")

BUCKET: Final = 60
"""Seconds per throughput bucket."""
HOUR: Final = 3600
WINDOW: Final = 1000
"""Positions read per query when counting back from the head."""
SCAN_BUDGET: Final = 100_000
"""Events read at most to count the last hour back from the head."""
LAG_EVERY: Final = 5.0
"""Seconds between the background lag samples."""
LAG_KEPT: Final = 3600
"""Lag samples kept at most (those of the last hour)."""
STREAMS_SCANNED: Final = 10_000
"""Streams read at most to find the biggest."""
BIGGEST_TTL: Final = 30.0
"""Seconds the biggest streams and categories of a grown log are reused when counting them
took more than one query."""
STREAMS_PAGE: Final = 1000
"""Streams listed per query."""
TOP: Final = 10


@dataclasses.dataclass
class Throughput:
    """Events appended per minute, over the last hour, as far as they were counted."""

    counts: dict[int, int] = dataclasses.field(default_factory=dict)
    """Events by minute (seconds since 1970 // ``BUCKET``)."""
    counted_to: int | None = None
    """The position up to which events are counted (None: never counted)."""
    since: float | None = None
    """The moment from which the counts are complete, if later than an hour ago (the
    budget ran out before the first count reached back an hour)."""

    async def update(self, store: EventStore, now: float) -> None:
        """Count the events appended since the last update (or the last hour's, back from
        the head, the first time or after a gap larger than the budget)."""
        head = await store.last_position()
        if self.counted_to is None or not 0 <= head - self.counted_to <= SCAN_BUDGET:
            await self._count_back(store, head, now)
        else:
            async for event in store.read_all(after=self.counted_to, limit=SCAN_BUDGET):
                self._add(event.recorded_at.timestamp())
                self.counted_to = event.position
        oldest = int(now - HOUR) // BUCKET
        self.counts = {minute: n for minute, n in self.counts.items() if minute > oldest}
        if self.since is not None and self.since < now - HOUR:
            self.since = None

    async def _count_back(self, store: EventStore, head: int, now: float) -> None:
        self.counts, self.since, self.counted_to = {}, None, head
        end, read, start, oldest = head, 0, now - HOUR, now
        while end > 0:
            if read >= SCAN_BUDGET:
                self.since = oldest
                return
            low = max(0, end - WINDOW)
            page = await store.read_page(after=low, limit=WINDOW)
            moments = [e.recorded_at.timestamp() for e in page.events if e.position <= end]
            for moment in moments:
                if moment >= start:
                    self._add(moment)
            read, end = read + len(moments), low
            oldest = min(moments, default=now)
            if oldest < start:
                return

    def _add(self, moment: float) -> None:
        minute = int(moment) // BUCKET
        self.counts[minute] = self.counts.get(minute, 0) + 1

    def series(self, now: float) -> tuple[list[int], list[float | None]]:
        """The minutes of the last hour (their start, in seconds since 1970) and the events
        per second in each (the current minute's so far; None before ``since``)."""
        current = int(now) // BUCKET
        minutes = list(range(current - HOUR // BUCKET + 1, current + 1))
        rates: list[float | None] = []
        for minute in minutes:
            if self.since is not None and (minute + 1) * BUCKET <= self.since:
                rates.append(None)
                continue
            elapsed = BUCKET if minute < current else max(1.0, now - minute * BUCKET)
            rates.append(round(self.counts.get(minute, 0) / elapsed, 3))
        return [m * BUCKET for m in minutes], rates

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclasses.dataclass(frozen=True)
class Biggest:
    """The biggest streams and categories among those read."""

    streams: list[StreamInfo]
    categories: list[tuple[str, int, int]]
    """(category, events, streams), most events first."""
    scanned: int
    complete: bool
    """Every stream was read (else only the first ``STREAMS_SCANNED`` by name)."""
    at: float
    """When they were counted (seconds since 1970)."""
    head: int
    """The log's head then."""

    @property
    def counted_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.at, dt.UTC)


async def biggest(store: EventStore, now: float) -> Biggest:
    """The ``TOP`` streams with the most events and categories with the most events, among
    the first ``STREAMS_SCANNED`` streams (by name)."""
    top: list[tuple[int, str, StreamInfo]] = []
    categories: dict[str, list[int]] = {}
    head = await store.last_position()
    after, scanned, complete = None, 0, False
    while scanned < STREAMS_SCANNED:
        wanted = min(STREAMS_PAGE, STREAMS_SCANNED - scanned)
        infos = await store.list_streams(after=after, limit=wanted)
        for info in infos:
            entry = (info.event_count, info.stream, info)
            if len(top) < TOP:
                heapq.heappush(top, entry)
            else:
                heapq.heappushpop(top, entry)
            counted = categories.setdefault(info.category, [0, 0])
            counted[0] += info.event_count
            counted[1] += 1
        scanned += len(infos)
        if len(infos) < wanted:
            complete = True
            break
        after = infos[-1].stream
    streams = [info for _, _, info in sorted(top, key=lambda t: (-t[0], t[1]))]
    ranked = sorted(categories.items(), key=lambda item: (-item[1][0], item[0]))[:TOP]
    return Biggest(streams, [(c, n, s) for c, (n, s) in ranked], scanned, complete, now, head)


LagSample = tuple[float, dict[str, int]]


@dataclasses.dataclass
class History:
    """The dashboard's memory in this process (see the module's doc)."""

    throughput: Throughput = dataclasses.field(default_factory=Throughput)
    lags: collections.deque[LagSample] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LAG_KEPT)
    )
    biggest: Biggest | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    sampler: asyncio.Task[None] | None = None

    def note_lags(self, lags: dict[str, int], now: float) -> None:
        """Keep a sample of every projection's lag (and forget those over an hour old)."""
        self.lags.append((now, lags))
        while self.lags and self.lags[0][0] < now - HOUR:
            self.lags.popleft()

    def lag_series(self) -> tuple[list[float], dict[str, list[int | None]]]:
        """The sample times and each projection's lag at each (None: not known then)."""
        times = [at for at, _ in self.lags]
        names = sorted({name for _, lags in self.lags for name in lags})
        return times, {name: [lags.get(name) for _, lags in self.lags] for name in names}

    async def counted(self, store: EventStore) -> Throughput:
        """The throughput, brought up to date."""
        async with self.lock:
            await self.throughput.update(store, time.time())
        return self.throughput

    async def biggest_of(self, store: EventStore) -> Biggest:
        """The biggest streams and categories, recounted if the log grew since (and, when
        counting took more than one query, ``BIGGEST_TTL`` seconds passed)."""
        async with self.lock:
            now, last = time.time(), self.biggest
            if last is None or (
                await store.last_position() != last.head
                and (last.scanned < STREAMS_PAGE or now - last.at > BIGGEST_TTL)
            ):
                self.biggest = await biggest(store, now)
            assert self.biggest is not None
            return self.biggest

    def sample_in_background(self, lags: Callable[[], Awaitable[dict[str, int]]]) -> None:
        """Sample the lags every ``LAG_EVERY`` seconds until ``close`` (once started, calling
        again does nothing)."""
        if self.sampler is not None and not self.sampler.done():
            return

        async def sample() -> None:
            while True:
                try:
                    self.note_lags(await lags(), time.time())
                except Exception as error:  # the database is away: try at the next tick
                    log.warning("admin: sampling the projections' lag failed: %s", error)
                await asyncio.sleep(LAG_EVERY)

        self.sampler = asyncio.create_task(sample(), name="eskit admin lag sampler")

    async def close(self) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sampler
            self.sampler = None
