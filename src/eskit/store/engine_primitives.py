"""The primitives a backend implements, by default as calls into its engine.

``EventStore`` checks arguments, pages and subscribes (``base``); to reach the data it calls
these. A backend with an ``Engine`` (``eskit.store.engine``) needs nothing more: each one
hands the call to the engine, in a worker thread or on the loop (``Engine.call_async``). A
backend without one overrides them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable

from eskit.store.chain import ChainRow, ChainStart
from eskit.store.engine import Engine
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.rules import PreparedAppend, PreparedSnapshot


class EnginePrimitives:
    """The store's primitives, each a call into ``engine`` (see the module docstring)."""

    engine: Engine
    """The backend's blocking primitives (``eskit.store.engine``), shared with the blocking
    face. A backend without one overrides the primitives below."""

    async def _chain_page(self, after: int, limit: int) -> list[ChainRow]:
        """Events past position ``after`` as stored, with their links, for ``eskit verify``
        (``eskit.store.audit``); a backend without a chain raises NotImplementedError."""
        return await self.engine.call_async(self.engine.chain_page, after, limit)

    async def _chain_start(self) -> ChainStart | None:
        """The store's chain start record (``chain.ChainStart``), None if it is missing."""
        return await self.engine.call_async(self.engine.chain_start)

    def _append_many(self, appends: list[PreparedAppend]) -> Awaitable[list[AppendResult]]:
        """Write every append or none (``append`` is the case of one). Check each one
        (tombstone, idempotent replay, then expected version) before writing any; return
        results in order, positions consecutive in that order. The streams are distinct.
        (The engine's awaitable itself, not a coroutine wrapping it: a frame less.)"""
        return self.engine.append_many_async(appends)

    async def _delete(
        self, stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool = False
    ) -> None:
        await self.engine.write_async(self.engine.delete, stream, expected, hard, keeps_revision)

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        await self.engine.write_async(self.engine.set_metadata, stream, metadata)

    async def _get_metadata(self, stream: str) -> StreamMetadata:
        return await self.engine.call_async(self.engine.get_metadata, stream)

    async def _save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        """Store or replace it unless the stream is tombstoned; keep the newest few."""
        await self.engine.write_async(self.engine.save_snapshot, snapshot, recorded_at)

    async def _load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        """The newest visible snapshot at or below ``max_version``; raise if tombstoned."""
        return await self.engine.call_async(
            self.engine.load_snapshot, stream, snapshot_version, max_version
        )

    async def _snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """``_load_snapshot`` and the first page after it (at most ``count`` events, none
        past ``max_version``), in one visit to the engine."""
        return await self.engine.call_async(
            self.engine.snapshot_and_page, stream, snapshot_version, max_version, count
        )

    async def _stream_version(self, stream: str) -> int | None:
        return await self.engine.call_async(self.engine.stream_version, stream)

    async def _last_position(self) -> int:
        return await self.engine.call_async(self.engine.last_position)

    async def _find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        return await self.engine.call_async(self.engine.find_event, event_id)

    async def _list_streams(
        self, category: str | None, after: str | None, limit: int
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams with events named after ``after``, by name (``category``
        never contains ``-``)."""
        return await self.engine.call_async(self.engine.list_streams, category, after, limit)

    async def _read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        """Up to ``count`` visible events from ``from_version`` (None: first or last)."""
        return await self.engine.call_async(
            self.engine.read_stream_page, stream, from_version, backwards, count
        )

    async def _read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        """Up to ``count`` matching events after ``after``, and the position up to which
        the log was searched (the next page starts there)."""
        return await self.engine.call_async(
            self.engine.read_all_page, after, count, types, category
        )

    async def _read_all_page_backwards(
        self,
        before: int,
        after: int,
        count: int,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> list[RecordedEvent]:
        """Up to ``count`` matching events with ``after < position < before``, newest
        first."""
        return await self.engine.call_async(
            self.engine.read_all_page_backwards, before, after, count, types, category
        )
