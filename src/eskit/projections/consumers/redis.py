"""A projection fed from the relay's Redis stream (``{prefix}:events``, published by
``eskit.brokers.redis.RedisPublisher``), for deployments that have Redis and no NATS.

A Redis stream has no partitions to spread over, so keeping each stream's order means one
reader at a time: workers of one group take turns holding a **lease** (a Redis key with a
time to live, renewed at every batch); the holder reads as the group's one consumer,
``active``, and the others wait as standbys. Entries the previous holder read but never
acked (it died) stay pending for ``active``, and the next holder reads those first. Each
batch is applied with its event ids recorded in the read model's inbox, in one transaction
(``base.apply_once``), then acked: repeats are dropped, never applied twice.

Limits, plainly: no load sharing (use JetStream partitions for that); a holder paused past
its lease (a long GC pause, a frozen VM) may commit one batch after its successor started,
which can put two events of a stream out of order in the read model (never twice).

A handler that keeps failing on an event (after the engine's retries) gets the group
stuck (``stuck``, partition 0): every stream waits, the event stays pending, and
``stuck`` and ``error`` say where and why, until an operator skips it (``skip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import redis.exceptions

from eskit.brokers import message
from eskit.brokers.publisher import safe_address
from eskit.brokers.redis import BODY, client, stream_key
from eskit.errors import BrokerUnavailable
from eskit.projections.consumers.base import BrokerWorker, PartitionStatus, stuck_event
from eskit.projections.database import Database
from eskit.projections.failure import describe
from eskit.projections.projection import SQLProjection
from eskit.retry import backoff

log = logging.getLogger("eskit.projections.consumers.redis")
_BODY = BODY.encode()
READER = "active"
"""The group's one consumer name: whoever holds the lease reads as it."""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisConsumer(BrokerWorker):
    """One worker applying ``projection`` from ``{prefix}:events``; start several with the
    same ``group`` for a hot standby. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        url: str,
        projection: SQLProjection,
        database: Database,
        *,
        prefix: str = "eskit",
        group: str | None = None,
        batch_size: int = 100,
        lease: float = 10.0,
        block: float = 1.0,
        backoff: float = 0.1,
        retries: int = 3,
        stuck_poll: float = 0.5,
    ) -> None:
        super().__init__(
            projection, database, group, backoff=backoff, retries=retries, stuck_poll=stuck_poll
        )
        if not block < lease / 2:
            raise ValueError(f"block ({block} s) must be under half the lease ({lease} s)")
        self.key = stream_key(message.check_prefix(prefix))
        self.lease_key = f"{self.key}:lease:{self.group}"
        self.batch_size, self.lease, self.block = batch_size, lease, block
        self.token = uuid.uuid4().hex
        self.holding = False
        self.error: str | None = None
        self.url = url
        self._redis = client(url, timeout=block + 5.0)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Set up the read model and the group; then follow in the background. Raises
        ``BrokerUnavailable`` if Redis cannot be reached."""
        await self._set_up_read_model()
        await self._look_for_stuck()
        try:
            await self._redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except redis.exceptions.RedisError as error:
            raise BrokerUnavailable(
                f"Redis {safe_address(self.url)} key {self.key}: {error!r}"
            ) from error
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"{self.group}:redis")

    async def stop(self) -> None:
        """Finish the batch in hand, give the lease back, stop."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(redis.exceptions.RedisError):
            if self.holding:
                await self._redis.eval(_RELEASE, 1, self.lease_key, self.token)
        self.holding = False
        with contextlib.suppress(redis.exceptions.RedisError):
            await self._redis.aclose()

    async def _run(self) -> None:
        failures, pending_first = 0, True
        while not self._stopping.is_set():
            try:
                if not await self._hold():
                    await self._pause(self.lease / 4)
                    continue
                if self.stuck:  # until an operator skips the event: read nothing
                    await self._pause(self.stuck_poll)
                    await self._look_for_stuck()
                    pending_first = True  # the skipped event's turn: dropped as applied
                    continue
                if pending_first:  # taken over maybe: stuck by the last holder?
                    await self._look_for_stuck()
                    if self.stuck:
                        continue
                entries = await self._read(pending_first)
                if pending_first and not entries:
                    pending_first = False  # nothing left over: read new entries from now on
                    continue
                if entries and not await self._apply(entries):
                    continue
                failures, self.error = 0, None
            except Exception as error:  # Redis away, the read model failing: retry later
                failures, pending_first = failures + 1, True
                self.error = describe(error)
                log.warning("consumer %s: %s (retrying)", self.group, self.error)
                await self._pause(backoff(self.backoff, failures))

    async def _hold(self) -> bool:
        """Take or renew the lease; False while another worker holds it."""
        ttl = int(self.lease * 1000)
        if self.holding:
            self.holding = bool(await self._redis.eval(_RENEW, 1, self.lease_key, self.token, ttl))
        if not self.holding:
            self.holding = bool(await self._redis.set(self.lease_key, self.token, nx=True, px=ttl))
        return self.holding

    async def _read(self, pending: bool) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries left pending for ``active`` (``pending``), or new ones (waiting up to
        ``block`` seconds)."""
        found: Any = await self._redis.xreadgroup(
            self.group,
            READER,
            {self.key: "0" if pending else ">"},
            count=self.batch_size,
            block=None if pending else int(self.block * 1000),
        )
        return list(found[0][1]) if found else []

    async def _apply(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bool:
        """Apply the entries with the engine and ack them; False if an event got stuck
        (nothing acked: the entries stay pending, for after the skip)."""
        events = self._decode((entry_id, fields.get(_BODY)) for entry_id, fields in entries)
        if (await self._apply_events(events, lambda event: 0)).stuck:
            stuck = self.stuck[0]
            self.error = f"stuck at position {stuck.position} ({stuck.event_type}): {stuck.error}"
            return False
        await self._redis.xack(self.key, self.group, *(entry_id for entry_id, _ in entries))
        return True

    async def status(self) -> list[PartitionStatus]:
        """The group as one partition (``0``): entries not yet acked (read by no one yet,
        or pending), those delivered more than once, and where it is stuck, if it is."""
        groups: Any = await self._redis.xinfo_groups(self.key)
        group = next((g for g in groups if _text(g["name"]) == self.group), None)
        pending = 0 if group is None else int(group["pending"]) + int(group.get("lag") or 0)
        found: Any = await self._redis.xpending_range(
            self.key, self.group, min="-", max="+", count=self.batch_size
        )
        redelivered = sum(1 for entry in found if entry["times_delivered"] > 1)
        stuck = self.stuck.get(0)
        error = self.error if stuck is None else stuck.error
        return [
            PartitionStatus(0, pending, redelivered, error, stuck is not None, *stuck_event(stuck))
        ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
