"""The conformance suite every event store backend must pass, and a model-based test.

A backend is done when it passes this suite: the contract (DESIGN.md, ``EventStore``) is
checked here once, so the memory, SQLite and PostgreSQL stores, and third-party ones, cannot
drift apart. Subclass ``EventStoreConformance`` in a test module and say how to make a store::

    from eskit.testing import EventStoreConformance, store_model_test

    class TestMyStore(EventStoreConformance):
        def make_store(self, tmp_path, **options):
            return MyStore(tmp_path / "events", **options)

    TestMyStoreModel = store_model_test(lambda directory: MyStore(directory / "events")).TestCase

``make_store`` must return a new, empty, unopened store on every call and pass ``options``
(``clock=``, ``max_event_size=``) to the backend. The suite needs pytest, anyio's pytest
plugin and hypothesis (eskit's ``dev`` extra).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import datetime as dt
import decimal
import functools
import math
import shutil
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from eskit.errors import (
    IdempotencyConflict,
    StoreClosed,
    StreamDeleted,
    WrongExpectedVersion,
)
from eskit.store.base import EventStore
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamMetadata,
)

__all__ = ["EventStoreConformance", "store_model_test"]

TIMEOUT: Final = 5.0
"""Seconds a subscription may take to deliver before the test fails instead of hanging."""
SMALL_PAGE: Final = 7
"""A page size far below the default, so a few dozen events already span several pages."""
T0: Final = dt.datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


# -- helpers ---------------------------------------------------------------------------------


def new(type_: str = "Happened", **data: Any) -> NewEvent:
    """One event with generated id."""
    return NewEvent(type_, data)


def numbered(count: int, type_: str = "Happened", start: int = 0) -> list[NewEvent]:
    """``count`` events whose data says their place (``{"n": start + i}``)."""
    return [NewEvent(type_, {"n": start + i}) for i in range(count)]


def with_id(type_: str = "Happened", **data: Any) -> NewEvent:
    """One event with an explicit id, as a retrying caller sends it."""
    return NewEvent(type_, data, id=uuid.uuid4())


async def collect(events: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    """Drain a read into a list (reads are lazy: nothing is checked before iterating)."""
    return [e async for e in events]


async def versions(store: EventStore, stream: str, **read: Any) -> list[int]:
    return [e.version for e in await collect(store.read_stream(stream, **read))]


async def positions(store: EventStore, **read: Any) -> list[int]:
    return [e.position for e in await collect(store.read_all(**read))]


async def log_of(store: EventStore) -> list[RecordedEvent]:
    """Everything in the log, to prove that a failed call wrote nothing."""
    return await collect(store.read_all())


@contextlib.asynccontextmanager
async def subscription(
    store: EventStore, **options: Any
) -> AsyncIterator[AsyncGenerator[RecordedEvent, None]]:
    """A subscription that is closed when the block ends, whatever happened inside."""
    events = cast(AsyncGenerator[RecordedEvent, None], store.subscribe(**options))
    try:
        yield events
    finally:
        await events.aclose()


async def take(events: AsyncIterator[RecordedEvent], count: int) -> list[RecordedEvent]:
    """The next ``count`` events of a subscription, failing rather than hanging."""
    async with asyncio.timeout(TIMEOUT):
        return [await anext(events) for _ in range(count)]


def same_json(left: object, right: object) -> bool:
    """Equal as JSON values and of the same Python types (``1`` is not ``1.0`` nor ``True``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        right_dict = cast(dict[str, object], right)
        return left.keys() == right_dict.keys() and all(
            same_json(v, right_dict[k]) for k, v in left.items()
        )
    if isinstance(left, list):
        right_list = cast(list[object], right)
        return len(left) == len(right_list) and all(
            same_json(a, b) for a, b in zip(left, right_list, strict=True)
        )
    if isinstance(left, float):
        return repr(left) == repr(right)  # tells -0.0 from 0.0
    return left == right


class ManualClock:
    """A clock the test moves by hand, for ``recorded_at`` and ``max_age``."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


# -- test data -------------------------------------------------------------------------------

_PAYLOADS: Final[dict[str, dict[str, Any]]] = {
    "empty": {},
    "unicode": {"text": "héllo wörld ✓ 😀 שלום 中文 e\u0301", "ключ": "значение", "": ""},
    "nested": {"a": [1, [2, [3, []]], {"b": [{"c": None}, {}]}], "d": {"e": {"f": {"g": []}}}},
    "floats": {"f": [0.1, -2.5e-300, 1.7976931348623157e308, 5e-324, 1.0, -0.0, 1e16]},
    "big_ints": {"i": [2**63 - 1, -(2**63), 2**64, 10**30, -(10**30), 0, -1]},
    "scalars": {"true": True, "false": False, "null": None, "empty": "", "zero": 0},
    "escapes": {"s": 'quote " backslash \\ nul \x00 newline \n tab \t \u2028 </script>'},
}

_NOT_JSON: Final[dict[str, dict[Any, Any]]] = {
    "set": {"s": {1, 2}},
    "tuple": {"t": (1, 2)},
    "bytes": {"b": b"raw"},
    "datetime": {"when": T0},
    "decimal": {"d": decimal.Decimal("1.5")},
    "uuid": {"u": uuid.UUID(int=1)},
    "nan": {"x": math.nan},
    "infinity": {"x": -math.inf},
    "int_key": {1: "one"},
    "nested_set": {"a": [{"b": {3}}]},
    "object": {"o": object()},
}

_INVALID_NAMES: Final[dict[str, Any]] = {
    "empty": "",
    "201_chars": "x" * 201,
    "newline": "line\nbreak-1",
    "nul": "nul\x00-1",
    "tab": "tab\t-1",
    "bell": "bell\x07",
    "delete": "del\x7f",
    "c1_control": "nel\x85",
    "surrogate": "half\ud800",
    "dollar": "$system",
    "only_dollar": "$",
    "int": 42,
    "none": None,
    "bytes": b"order-1",
}

_HOSTILE_NAMES: Final[dict[str, str]] = {
    "sql_injection": "'; DROP TABLE events; --",
    "sql_injection_streams": "Robert'); DROP TABLE streams;--",
    "double_quote": 'quote"d-1',
    "single_quote": "it's-1",
    "printf": "%s-%d",
    "pyformat": "%(stream)s-1",
    "qmark": "?-1",
    "named_param": ":stream-1",
    "dollar_param": "x$1-1",
    "backslash": "back\\slash-1",
    "like_wildcards": "a%_-1",
    "emoji": "🦄-1",
    "rtl": "שלום-עולם",
    "combining": "e\u0301\u0308-1",
    "spaces": " spaced name -1 ",
    "sql_keywords": "SELECT * FROM events WHERE 1=1",
    "200_chars": "x" * 199 + "-",
    "200_emoji": "🦄" * 200,
}


class EventStoreConformance(abc.ABC):
    """The event store contract as tests; subclass it once per backend.

    Every test gets a fresh store from ``make_store``; tests that need options (a clock,
    a size limit) open their own. Test names say the scenario, area first: expected_version,
    concurrent, idempotent, append, read_stream, read_all, subscribe, delete, tombstone,
    metadata, invalid, hostile, lifecycle.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    @abc.abstractmethod
    def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        """A new, empty, unopened store; ``options`` go to the backend (clock=, ...)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The suite runs on asyncio (the backends' event loop)."""
        return "asyncio"

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        """An open, empty store with default options, closed after the test."""
        async with self.make_store(tmp_path) as store:
            yield store

    # == expected version: {ANY, NO_STREAM, STREAM_EXISTS, right, wrong} x stream state ====

    async def _check_append_outcome(
        self,
        store: EventStore,
        stream: str,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
        visible_before: list[int],
    ) -> None:
        """Append two events; either they land at ``outcome`` (last version) or the
        append raises with ``actual`` and leaves the whole log as it was."""
        log = await log_of(store)
        batch = [new("Tried", i=0), new("Tried", i=1)]
        if isinstance(outcome, int):
            result = await store.append(stream, batch, expected_version=expected)
            assert result.last_version == outcome
            assert result.last_position == len(log) + 2
            assert await store.stream_version(stream) == outcome
            read = await collect(store.read_stream(stream))
            assert [e.version for e in read] == [*visible_before, outcome - 1, outcome]
            assert [e.data for e in read[-2:]] == [{"i": 0}, {"i": 1}]
            return
        error_type, actual = outcome
        with pytest.raises(error_type) as raised:
            await store.append(stream, batch, expected_version=expected)
        if isinstance(raised.value, WrongExpectedVersion):
            assert raised.value.stream == stream
            assert raised.value.expected == expected
            assert raised.value.actual == actual
        assert await log_of(store) == log
        assert await store.last_position() == len(log)

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 1),
            (NO_STREAM, 1),
            (STREAM_EXISTS, (WrongExpectedVersion, None)),
            (0, (WrongExpectedVersion, None)),
            (5, (WrongExpectedVersion, None)),
        ],
        ids=["any", "no_stream", "stream_exists", "int_0", "int_5"],
    )
    async def test_expected_version_on_absent_stream(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """A stream that was never written: only ANY and NO_STREAM may create it."""
        await store.append("other-1", numbered(2))
        await self._check_append_outcome(store, "order-1", expected, outcome, [])

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 4),
            (NO_STREAM, (WrongExpectedVersion, 2)),
            (STREAM_EXISTS, 4),
            (2, 4),
            (1, (WrongExpectedVersion, 2)),
            (3, (WrongExpectedVersion, 2)),
            (0, (WrongExpectedVersion, 2)),
        ],
        ids=["any", "no_stream", "stream_exists", "right_int", "stale_int", "next_int", "int_0"],
    )
    async def test_expected_version_on_stream_with_events(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """A stream at version 2: the int must be exactly the last version (not the next)."""
        await store.append("order-1", numbered(3))
        await self._check_append_outcome(store, "order-1", expected, outcome, [0, 1, 2])

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 4),
            (NO_STREAM, 4),
            (STREAM_EXISTS, (WrongExpectedVersion, None)),
            (2, (WrongExpectedVersion, None)),
            (0, (WrongExpectedVersion, None)),
        ],
        ids=["any", "no_stream", "stream_exists", "old_last_int", "int_0"],
    )
    async def test_expected_version_on_soft_deleted_stream(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """Soft-deleted = absent for the check, but versions continue after the old last."""
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        await self._check_append_outcome(store, "order-1", expected, outcome, [])

    @pytest.mark.parametrize(
        "expected",
        [ANY, NO_STREAM, STREAM_EXISTS, 2, 3, 0],
        ids=["any", "no_stream", "stream_exists", "old_last_int", "next_int", "int_0"],
    )
    async def test_expected_version_on_tombstoned_stream(
        self, store: EventStore, expected: ExpectedVersion
    ) -> None:
        """A tombstoned stream refuses every append, whatever version is expected."""
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        await self._check_append_outcome(store, "order-1", expected, (StreamDeleted, None), [])

    async def test_expected_version_error_message_names_everything(self, store: EventStore) -> None:
        """The message alone must let an operator see stream, expected and actual."""
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.append("order-1", [new()], expected_version=7)
        message = str(raised.value)
        assert "order-1" in message
        assert "7" in message
        assert "2" in message

    async def test_expected_version_can_chain_appends(self, store: EventStore) -> None:
        """The result of one append is the expected version of the next."""
        result = await store.append("order-1", [new()], expected_version=NO_STREAM)
        for _ in range(5):
            result = await store.append(
                "order-1", numbered(2), expected_version=result.last_version
            )
        assert result.last_version == 10
        assert await versions(store, "order-1") == list(range(11))

    # == concurrency =======================================================================

    async def test_concurrent_appends_with_same_expected_version_one_wins(
        self, store: EventStore
    ) -> None:
        """50 writers race from version 0: exactly one append lands, 49 are refused."""
        await store.append("order-1", [new()])
        outcomes = await asyncio.gather(
            *(
                store.append("order-1", [new("Raced", writer=w)], expected_version=0)
                for w in range(50)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, AppendResult)]
        losses = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
        assert len(wins) == 1
        assert len(losses) == 49
        assert all(e.actual == 1 and e.expected == 0 for e in losses)
        winner = outcomes.index(wins[0])
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == [0, 1]
        assert read[1].data == {"writer": winner}
        assert await store.last_position() == 2

    async def test_concurrent_appends_with_no_stream_one_creates_it(
        self, store: EventStore
    ) -> None:
        """50 writers race to create the same stream: one creates it, the rest see it."""
        outcomes = await asyncio.gather(
            *(
                store.append("order-1", numbered(2, start=10 * w), expected_version=NO_STREAM)
                for w in range(50)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, AppendResult)]
        losses = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
        assert wins == [AppendResult(1, 2, 2)]
        assert len(losses) == 49
        assert all(e.actual == 1 for e in losses)
        assert await store.last_position() == 2

    async def test_concurrent_writers_retrying_get_contiguous_versions(
        self, store: EventStore
    ) -> None:
        """Writers that retry on conflict all land, in one gap-free sequence of versions."""
        writers, appends_each = 10, 5

        async def write(writer: int) -> None:
            for i in range(appends_each):
                while True:
                    version = await store.stream_version("order-1")
                    # Give the other writers a turn between read and write: the race under test.
                    await asyncio.sleep(0)
                    try:
                        await store.append(
                            "order-1",
                            [new("Raced", writer=writer, i=i)],
                            expected_version=NO_STREAM if version is None else version,
                        )
                        break
                    except WrongExpectedVersion:
                        continue

        async with asyncio.timeout(30):
            await asyncio.gather(*(write(w) for w in range(writers)))
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == list(range(writers * appends_each))
        assert [e.position for e in read] == sorted(e.position for e in read)
        for writer in range(writers):
            mine = [e.data["i"] for e in read if e.data["writer"] == writer]
            assert mine == list(range(appends_each))

    async def test_concurrent_appends_to_many_streams_get_unique_consecutive_positions(
        self, store: EventStore
    ) -> None:
        """Each append's events are consecutive in the log; no position is given twice."""
        results = await asyncio.gather(
            *(store.append(f"order-{i % 7}", numbered(3, start=3 * i)) for i in range(60))
        )
        taken = [p for r in results for p in range(r.first_position, r.last_position + 1)]
        assert sorted(taken) == list(range(1, 181))
        log = await log_of(store)
        assert [e.position for e in log] == list(range(1, 181))
        for result in results:
            batch = log[result.first_position - 1 : result.last_position]
            assert len({e.stream for e in batch}) == 1
            assert [e.data["n"] for e in batch] == [batch[0].data["n"] + k for k in range(3)]
        for stream in {e.stream for e in log}:
            assert await versions(store, stream) == list(range(len(await versions(store, stream))))

    async def test_concurrent_readers_never_see_part_of_a_batch(self, store: EventStore) -> None:
        """A reader sees all events of an append or none, even while appends run."""
        store.page_size = 10_000  # one query per read: each read is one snapshot of the log

        async def write() -> None:
            for i in range(20):
                await store.append(f"order-{i}", numbered(10, type_=f"Batch{i}"))

        async def read() -> list[list[RecordedEvent]]:
            snapshots = []
            for _ in range(20):
                snapshots.append(await log_of(store))
                await asyncio.sleep(0)  # let the writer advance between snapshots
            return snapshots

        _, snapshots = await asyncio.gather(write(), read())
        for snapshot in snapshots:
            sizes: dict[str, int] = {}
            for event in snapshot:
                sizes[event.stream] = sizes.get(event.stream, 0) + 1
            assert set(sizes.values()) <= {10}, sizes
            assert [e.position for e in snapshot] == list(range(1, len(snapshot) + 1))

    # == idempotent retries ================================================================

    async def test_idempotent_retry_at_same_expected_version_returns_same_result(
        self, store: EventStore
    ) -> None:
        """A retried append (same ids, same place) succeeds and writes nothing again."""
        await store.append("order-1", [new()])
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=0)
        again = await store.append("order-1", batch, expected_version=0)
        assert again == first
        assert (again.last_version, again.last_position) == (2, 3)
        read = await collect(store.read_stream("order-1"))
        assert [e.id for e in read[1:]] == [e.id for e in batch]
        assert await store.last_position() == 3

    async def test_idempotent_retry_with_no_stream_returns_same_result(
        self, store: EventStore
    ) -> None:
        """The retry of a stream-creating append is recognised, not a version conflict."""
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        assert await store.append("order-1", batch, expected_version=NO_STREAM) == first
        assert await versions(store, "order-1") == [0, 1]

    async def test_idempotent_retry_with_any_writes_no_duplicate(self, store: EventStore) -> None:
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch)
        assert await store.append("order-1", batch, expected_version=ANY) == first
        assert await store.append("order-1", batch, expected_version=STREAM_EXISTS) == first
        assert await versions(store, "order-1") == [0, 1]
        assert await store.last_position() == 2

    async def test_idempotent_retry_after_later_appends_returns_original_result(
        self, store: EventStore
    ) -> None:
        """A retry that arrives late (others appended since) still gets its own result."""
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        await store.append("order-1", numbered(3), expected_version=1)
        assert await store.append("order-1", batch, expected_version=NO_STREAM) == first
        assert await versions(store, "order-1") == [0, 1, 2, 3, 4]

    async def test_idempotent_retry_of_single_event(self, store: EventStore) -> None:
        event = with_id("A")
        first = await store.append("order-1", [event])
        assert await store.append("order-1", [event], expected_version=NO_STREAM) == first
        assert await store.last_position() == 1

    async def test_idempotent_concurrent_retries_write_once(self, store: EventStore) -> None:
        """The same batch sent by 20 tasks at once (a client retrying in a hurry) lands once."""
        batch = [with_id("A"), with_id("B")]
        results = await asyncio.gather(
            *(store.append("order-1", batch, expected_version=NO_STREAM) for _ in range(20))
        )
        assert set(results) == {AppendResult(1, 2, 2)}
        assert await store.last_position() == 2

    async def test_idempotent_partial_overlap_conflicts_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        a, b, c = with_id("A"), with_id("B"), with_id("C")
        await store.append("order-1", [a, b])
        log = await log_of(store)
        with pytest.raises(IdempotencyConflict) as raised:
            await store.append("order-1", [a, c])
        assert isinstance(raised.value, ValueError)
        assert raised.value.stream == "order-1"
        assert await log_of(store) == log
        # c was not written by the refused batch, so it can still be appended on its own.
        await store.append("order-1", [c], expected_version=1)
        assert await versions(store, "order-1") == [0, 1, 2]

    async def test_idempotent_batch_extending_a_written_one_conflicts(
        self, store: EventStore
    ) -> None:
        a, b = with_id("A"), with_id("B")
        await store.append("order-1", [a])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", [a, b], expected_version=NO_STREAM)
        assert await store.last_position() == 1

    async def test_idempotent_ids_in_another_order_conflict(self, store: EventStore) -> None:
        a, b = with_id("A"), with_id("B")
        await store.append("order-1", [a, b])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", [b, a])
        assert await store.last_position() == 2

    async def test_idempotent_retry_at_other_expected_version_conflicts(
        self, store: EventStore
    ) -> None:
        """Same ids claimed to follow another version: not the same append, not a retry."""
        batch = [with_id("A"), with_id("B")]
        await store.append("order-1", batch, expected_version=NO_STREAM)
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", batch, expected_version=1)
        assert await store.last_position() == 2

    async def test_idempotent_id_used_in_another_stream_conflicts(self, store: EventStore) -> None:
        batch = [with_id("A")]
        await store.append("order-1", batch)
        with pytest.raises(IdempotencyConflict) as raised:
            await store.append("order-2", batch)
        assert raised.value.stream == "order-2"
        assert await store.stream_version("order-2") is None
        assert await store.last_position() == 1

    async def test_idempotent_id_from_another_stream_in_a_new_batch_conflicts(
        self, store: EventStore
    ) -> None:
        a = with_id("A")
        await store.append("order-1", [a])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-2", [with_id("B"), a])
        assert await store.last_position() == 1

    async def test_idempotent_duplicate_id_within_one_batch_is_value_error(
        self, store: EventStore
    ) -> None:
        a = with_id("A")
        with pytest.raises(ValueError):
            await store.append("order-1", [a, with_id("B"), a])
        assert await store.last_position() == 0

    async def test_idempotent_given_ids_are_kept(self, store: EventStore) -> None:
        batch = [with_id("A"), new("B"), with_id("C")]
        await store.append("order-1", batch)
        read = await collect(store.read_stream("order-1"))
        assert read[0].id == batch[0].id
        assert read[2].id == batch[2].id
        assert len({e.id for e in read}) == 3

    # == atomic batches ====================================================================

    @pytest.mark.parametrize("bad", ["set", "datetime", "nan", "bytes"])
    async def test_append_batch_with_invalid_third_event_writes_nothing(
        self, store: EventStore, bad: str
    ) -> None:
        await store.append("order-1", [new()])
        batch = [new("A"), new("B"), NewEvent("C", _NOT_JSON[bad]), new("D")]
        with pytest.raises(ValueError, match="event 2"):
            await store.append("order-1", batch)
        assert await versions(store, "order-1") == [0]
        assert await store.last_position() == 1

    async def test_append_batch_with_oversized_third_event_writes_nothing(
        self, tmp_path: Path
    ) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            batch = [new("A"), new("B"), new("C", blob="x" * 2000)]
            with pytest.raises(ValueError, match="event 2"):
                await store.append("order-1", batch)
            assert await store.last_position() == 0

    async def test_append_batch_failing_expected_version_writes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(WrongExpectedVersion):
            await store.append("order-1", numbered(100), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [0]
        assert await store.last_position() == 1

    async def test_append_failure_leaves_store_usable(self, store: EventStore) -> None:
        """A refused append is not a broken store: the next append gets the next position."""
        await store.append("order-1", [new()])
        with pytest.raises(WrongExpectedVersion):
            await store.append("order-1", numbered(3), expected_version=5)
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {"x": {1}})])
        result = await store.append("order-1", [new()], expected_version=0)
        assert (result.last_version, result.last_position) == (1, 2)

    # == positions, versions and the recorded event =========================================

    async def test_append_first_event_is_version_0_position_1(self, store: EventStore) -> None:
        result = await store.append("order-1", [new()])
        assert result == AppendResult(last_version=0, last_position=1, count=1)
        assert result.first_position == 1

    async def test_append_result_describes_the_batch(self, store: EventStore) -> None:
        await store.append("other-1", numbered(2))
        result = await store.append("order-1", numbered(3))
        assert (result.last_version, result.last_position, result.count) == (2, 5, 3)
        assert result.first_position == 3
        read = await collect(store.read_stream("order-1"))
        assert [e.position for e in read] == [3, 4, 5]

    async def test_append_versions_are_per_stream_positions_global(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-2", numbered(3))
        await store.append("order-1", numbered(1))
        log = await log_of(store)
        assert [(e.stream, e.version, e.position) for e in log] == [
            ("order-1", 0, 1),
            ("order-1", 1, 2),
            ("order-2", 0, 3),
            ("order-2", 1, 4),
            ("order-2", 2, 5),
            ("order-1", 2, 6),
        ]

    async def test_append_recorded_event_fields(self, store: EventStore) -> None:
        before = dt.datetime.now(dt.UTC)
        event_id = uuid.uuid4()
        await store.append(
            "order-1",
            [
                NewEvent("OrderPlaced", {"total": 12}, metadata={"correlation_id": "c-1"}),
                NewEvent("OrderPaid", {"paid": True}, id=event_id),
            ],
        )
        after = dt.datetime.now(dt.UTC)
        placed, paid = await collect(store.read_stream("order-1"))
        assert isinstance(placed.id, uuid.UUID)
        assert placed.id != paid.id
        assert paid.id == event_id
        assert (placed.stream, placed.version, placed.position) == ("order-1", 0, 1)
        assert (paid.stream, paid.version, paid.position) == ("order-1", 1, 2)
        assert (placed.type, paid.type) == ("OrderPlaced", "OrderPaid")
        assert placed.data == {"total": 12}
        assert placed.metadata == {"correlation_id": "c-1"}
        assert paid.metadata == {}
        assert placed.category == "order"
        for event in (placed, paid):
            assert isinstance(event.recorded_at, dt.datetime)
            assert event.recorded_at.utcoffset() == dt.timedelta(0)
            slack = dt.timedelta(seconds=1)
            assert before - slack <= event.recorded_at <= after + slack

    async def test_append_generated_ids_are_unique(self, store: EventStore) -> None:
        await asyncio.gather(*(store.append(f"order-{i}", numbered(20)) for i in range(10)))
        ids = [e.id for e in await log_of(store)]
        assert len(ids) == 200
        assert len(set(ids)) == 200

    async def test_append_recorded_at_comes_from_the_injected_clock(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.append("order-1", [new()])
            clock.advance(90)
            await store.append("order-1", [new()])
            first, second = await collect(store.read_stream("order-1"))
            assert first.recorded_at == T0
            assert second.recorded_at == T0 + dt.timedelta(seconds=90)

    @pytest.mark.parametrize("name", list(_PAYLOADS))
    async def test_append_data_round_trips_exactly(self, store: EventStore, name: str) -> None:
        """Data and metadata come back equal and of the same types, in every read path."""
        payload = _PAYLOADS[name]
        await store.append("order-1", [NewEvent("Stored", payload, metadata=payload or None)])
        (from_stream,) = await collect(store.read_stream("order-1"))
        (from_log,) = await log_of(store)
        for event in (from_stream, from_log):
            assert same_json(event.data, payload), event.data
            assert same_json(event.metadata, payload), event.metadata

    async def test_append_empty_metadata_reads_as_empty_dict(self, store: EventStore) -> None:
        await store.append("order-1", [NewEvent("A", {}, metadata={}), NewEvent("B", {})])
        assert [e.metadata for e in await log_of(store)] == [{}, {}]

    async def test_append_of_largest_allowed_event(self, tmp_path: Path) -> None:
        """The default limit is 1 MiB: just under it is stored intact."""
        async with self.make_store(tmp_path) as store:
            blob = "é" * (1024 * 1024 // 2 - 100)  # two bytes each in UTF-8
            await store.append("order-1", [new(blob=blob)])
            (event,) = await log_of(store)
            assert event.data == {"blob": blob}

    # == read_stream ========================================================================

    async def test_read_stream_forwards_gives_all_in_version_order(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == [0, 1, 2, 3, 4]
        assert [e.data["n"] for e in read] == [0, 1, 2, 3, 4]

    async def test_read_stream_only_yields_its_own_stream(self, store: EventStore) -> None:
        """Streams that share a prefix or category are still separate streams."""
        for stream in ("order-1", "order-10", "order-1-a", "order", "order-2"):
            await store.append(stream, [new(stream=stream)])
        read = await collect(store.read_stream("order-1"))
        assert [e.data["stream"] for e in read] == ["order-1"]

    async def test_read_stream_from_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=2) == [2, 3, 4]
        assert await versions(store, "order-1", from_version=4) == [4]
        assert await versions(store, "order-1", from_version=0) == [0, 1, 2, 3, 4]

    async def test_read_stream_from_version_beyond_the_end_is_empty(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=5) == []
        assert await versions(store, "order-1", from_version=1000) == []

    async def test_read_stream_backwards_starts_at_the_last(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", backwards=True) == [4, 3, 2, 1, 0]

    async def test_read_stream_backwards_from_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=2, backwards=True) == [2, 1, 0]
        assert await versions(store, "order-1", from_version=0, backwards=True) == [0]

    async def test_read_stream_backwards_from_beyond_the_end_starts_at_the_last(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        assert await versions(store, "order-1", from_version=99, backwards=True) == [2, 1, 0]

    async def test_read_stream_limit(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", limit=2) == [0, 1]
        assert await versions(store, "order-1", limit=2, backwards=True) == [4, 3]
        assert await versions(store, "order-1", from_version=3, limit=5) == [3, 4]
        assert await versions(store, "order-1", from_version=3, limit=2, backwards=True) == [3, 2]
        assert await versions(store, "order-1", limit=99) == [0, 1, 2, 3, 4]

    async def test_read_stream_limit_zero_is_empty(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", limit=0) == []
        assert await versions(store, "order-1", limit=0, backwards=True) == []

    async def test_read_stream_of_absent_stream_is_empty(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        assert await versions(store, "order-2") == []
        assert await versions(store, "order-2", backwards=True) == []
        assert await versions(store, "order-2", from_version=3) == []

    async def test_read_stream_pages_forwards(self, store: EventStore) -> None:
        """Longer than a page: every event once, in order, also from the middle."""
        store.page_size = SMALL_PAGE
        for start in range(0, 50, 10):  # interleave another stream so pages are not the log
            await store.append("order-1", numbered(10, start=start))
            await store.append("other-1", numbered(3))
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == list(range(50))
        assert [e.data["n"] for e in read] == list(range(50))
        assert await versions(store, "order-1", from_version=13) == list(range(13, 50))
        assert await versions(store, "order-1", from_version=6, limit=15) == list(range(6, 21))
        assert await versions(store, "order-1", limit=SMALL_PAGE) == list(range(SMALL_PAGE))
        assert await versions(store, "order-1", limit=2 * SMALL_PAGE) == list(range(2 * SMALL_PAGE))

    async def test_read_stream_pages_backwards(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for start in range(0, 50, 10):
            await store.append("order-1", numbered(10, start=start))
            await store.append("other-1", numbered(3))
        backwards = await collect(store.read_stream("order-1", backwards=True))
        assert [e.version for e in backwards] == list(range(49, -1, -1))
        assert await versions(store, "order-1", from_version=30, backwards=True) == list(
            range(30, -1, -1)
        )
        assert await versions(store, "order-1", from_version=40, limit=16, backwards=True) == (
            list(range(40, 24, -1))
        )
        assert await versions(store, "order-1", limit=2 * SMALL_PAGE, backwards=True) == list(
            range(49, 49 - 2 * SMALL_PAGE, -1)
        )

    async def test_read_stream_with_page_boundary_at_the_start(self, store: EventStore) -> None:
        """Backwards paging must stop cleanly when a page ends exactly at version 0."""
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(2 * SMALL_PAGE))
        assert await versions(store, "order-1", backwards=True) == list(
            range(2 * SMALL_PAGE - 1, -1, -1)
        )
        assert await versions(store, "order-1") == list(range(2 * SMALL_PAGE))

    async def test_read_stream_very_large_from_version(self, store: EventStore) -> None:
        """Versions are Python ints: a from_version past 64 bits reads like any past the end."""
        await store.append("order-1", numbered(3))
        assert await versions(store, "order-1", from_version=2**64) == []
        assert await versions(store, "order-1", from_version=2**64, backwards=True) == [2, 1, 0]

    # == read_all and positions ===============================================================

    async def test_read_all_in_position_order(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("user-1", numbered(2))
        await store.append("order-1", numbered(1))
        log = await log_of(store)
        assert [e.position for e in log] == [1, 2, 3, 4, 5]
        assert [e.stream for e in log] == ["order-1", "order-1", "user-1", "user-1", "order-1"]

    async def test_read_all_of_empty_store_is_empty(self, store: EventStore) -> None:
        assert await log_of(store) == []
        assert await store.last_position() == 0

    async def test_read_all_after(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await positions(store, after=0) == [1, 2, 3, 4, 5]
        assert await positions(store, after=3) == [4, 5]
        assert await positions(store, after=5) == []
        assert await positions(store, after=50) == []
        assert await positions(store, after=2**64) == []

    async def test_read_all_limit(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await positions(store, limit=2) == [1, 2]
        assert await positions(store, after=2, limit=2) == [3, 4]
        assert await positions(store, limit=0) == []
        assert await positions(store, limit=10) == [1, 2, 3, 4, 5]

    async def test_read_all_types_filter(self, store: EventStore) -> None:
        await store.append("order-1", [new("A"), new("B"), new("C"), new("A")])
        assert await positions(store, types=["A"]) == [1, 4]
        assert await positions(store, types=["A", "C"]) == [1, 3, 4]
        assert await positions(store, types=("B",)) == [2]
        assert await positions(store, types={"C"}) == [3]
        assert await positions(store, types=(t for t in ["B", "C"])) == [2, 3]
        assert await positions(store, types=["Z"]) == []
        assert await positions(store, types=[]) == []

    async def test_read_all_types_match_exactly(self, store: EventStore) -> None:
        """No prefix, case or pattern matching on type names."""
        await store.append("order-1", [new("Paid"), new("paid"), new("PaidLate"), new("P%")])
        assert await positions(store, types=["Paid"]) == [1]
        assert await positions(store, types=["P%"]) == [4]
        assert await positions(store, types=["P_id"]) == []

    async def test_read_all_category_filter(self, store: EventStore) -> None:
        """The category is everything before the first '-', matched exactly."""
        for stream in ("order-1", "orders-1", "order", "order-a-b", "xorder-1", "Order-1"):
            await store.append(stream, [new(stream=stream)])
        read = await collect(store.read_all(category="order"))
        assert [e.stream for e in read] == ["order-1", "order", "order-a-b"]
        assert all(e.category == "order" for e in read)
        assert await positions(store, category="orders") == [2]
        assert await positions(store, category="nothing") == []

    async def test_read_all_category_is_not_a_pattern(self, store: EventStore) -> None:
        for stream in ("a%-1", "ab-1", "a_-1", "aXb-1", "a-1"):
            await store.append(stream, [new()])
        assert await positions(store, category="a%") == [1]
        assert await positions(store, category="a_") == [3]
        assert await positions(store, category="a") == [5]

    async def test_read_all_types_and_category_combined(self, store: EventStore) -> None:
        await store.append("order-1", [new("A"), new("B")])
        await store.append("user-1", [new("A"), new("B")])
        await store.append("order-2", [new("A")])
        assert await positions(store, types=["A"], category="order") == [1, 5]
        assert await positions(store, types=["B"], category="user") == [4]
        assert await positions(store, types=["A"], category="order", after=1) == [5]
        assert await positions(store, types=["A", "B"], category="order", limit=2) == [1, 2]

    async def test_read_all_pages_through_the_whole_log(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(10):
            await store.append(f"order-{i % 3}", numbered(5, start=5 * i))
        assert await positions(store) == list(range(1, 51))
        assert await positions(store, after=13) == list(range(14, 51))
        assert await positions(store, after=6, limit=15) == list(range(7, 22))
        assert await positions(store, limit=SMALL_PAGE) == list(range(1, SMALL_PAGE + 1))

    async def test_read_all_pages_with_sparse_matches(self, store: EventStore) -> None:
        """Filters that match one event in ten still find every match across pages."""
        store.page_size = SMALL_PAGE
        for i in range(100):
            stream = "rare-1" if i % 10 == 3 else f"common-{i % 4}"
            await store.append(stream, [new("Rare" if i % 10 == 3 else "Common", i=i)])
        rare = [i + 1 for i in range(100) if i % 10 == 3]
        assert await positions(store, types=["Rare"]) == rare
        assert await positions(store, category="rare") == rare
        assert await positions(store, types=["Rare"], category="rare") == rare
        assert await positions(store, types=["Rare"], after=50) == [p for p in rare if p > 50]
        assert await positions(store, types=["Rare"], limit=3) == rare[:3]
        assert await positions(store, category="rare", after=14, limit=4) == rare[2:6]
        assert (
            await positions(store, category="common", limit=20)
            == [p for p in range(1, 101) if p not in rare][:20]
        )

    async def test_last_position_follows_appends(self, store: EventStore) -> None:
        assert await store.last_position() == 0
        await store.append("order-1", numbered(3))
        assert await store.last_position() == 3
        await store.append("order-2", numbered(2))
        assert await store.last_position() == 5

    async def test_stream_version(self, store: EventStore) -> None:
        assert await store.stream_version("order-1") is None
        await store.append("order-1", numbered(3))
        assert await store.stream_version("order-1") == 2
        await store.append("order-1", numbered(1))
        assert await store.stream_version("order-1") == 3
        assert await store.stream_version("order-2") is None

    # == subscriptions =======================================================================

    async def test_subscribe_catches_up_then_goes_live(self, store: EventStore) -> None:
        """History first, then each new event arrives without polling (commit wakes it)."""
        store.poll_interval = 60.0  # a missed wake-up hangs until TIMEOUT and fails
        await store.append("order-1", numbered(5))
        received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

        async def follow() -> None:
            async for event in store.subscribe():
                received.put_nowait(event)

        task = asyncio.create_task(follow())
        try:
            async with asyncio.timeout(TIMEOUT):
                history = [await received.get() for _ in range(5)]
                assert [e.position for e in history] == [1, 2, 3, 4, 5]
                for n in range(5, 15):
                    await store.append(f"order-{n % 2}", [new("Live", n=n)])
                    live = await received.get()
                    assert (live.position, live.data) == (n + 1, {"n": n})
            assert received.empty()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def test_subscribe_to_empty_store_gets_the_first_event(self, store: EventStore) -> None:
        """Subscribed before anything exists (possibly already waiting): no poll needed."""
        store.poll_interval = 60.0
        async with subscription(store) as events:
            pending = asyncio.ensure_future(take(events, 1))
            await store.append("order-1", [new("First")])
            (first,) = await pending
            assert (first.position, first.type) == (1, "First")

    async def test_subscribe_resumes_from_checkpoint(self, store: EventStore) -> None:
        """A subscriber restarted with after=p gets exactly the events past p."""
        await store.append("order-1", numbered(10))
        async with subscription(store, after=4) as events:
            assert [e.position for e in await take(events, 6)] == [5, 6, 7, 8, 9, 10]
            await store.append("order-1", [new()])
            assert [e.position for e in await take(events, 1)] == [11]

    async def test_subscribe_from_the_head_gets_only_new_events(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        head = await store.last_position()
        async with subscription(store, after=head) as events:
            await store.append("order-1", [new("New")])
            (event,) = await take(events, 1)
            assert (event.position, event.type) == (4, "New")

    async def test_subscribe_pages_through_long_history(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(50))
        async with subscription(store) as events:
            received = await take(events, 50)
            assert [e.position for e in received] == list(range(1, 51))
            await store.append("order-1", numbered(SMALL_PAGE + 1, start=50))
            more = await take(events, SMALL_PAGE + 1)
            assert [e.data["n"] for e in more] == list(range(50, 50 + SMALL_PAGE + 1))

    async def test_subscribe_many_subscribers_each_get_everything_once_in_order(
        self, store: EventStore
    ) -> None:
        """Ten subscribers, some started before and some during concurrent appends."""
        store.page_size = SMALL_PAGE
        total = 120

        async def subscriber() -> list[int]:
            async with subscription(store) as events:
                return [e.position for e in await take(events, total)]

        early = [asyncio.create_task(subscriber()) for _ in range(5)]
        writes = [store.append(f"order-{i % 4}", numbered(3, start=3 * i)) for i in range(20)]
        await asyncio.gather(*writes[:10])
        late = [asyncio.create_task(subscriber()) for _ in range(5)]
        await asyncio.gather(*writes[10:])
        await store.append("order-9", numbered(total - 60))
        for received in await asyncio.gather(*early, *late):
            assert received == list(range(1, total + 1))

    async def test_subscribe_during_concurrent_appends_sees_no_gaps(
        self, store: EventStore
    ) -> None:
        """Positions a subscriber sees only grow and none is skipped, under 10 writers."""
        store.page_size = SMALL_PAGE

        async def writer(w: int) -> None:
            for i in range(10):
                await store.append(f"order-{w}", numbered(3, start=3 * i))

        async with subscription(store) as events:
            received, _ = await asyncio.gather(
                take(events, 300), asyncio.gather(*(writer(w) for w in range(10)))
            )
        assert [e.position for e in received] == list(range(1, 301))
        for w in range(10):
            mine = [e for e in received if e.stream == f"order-{w}"]
            assert [e.version for e in mine] == list(range(30))

    async def test_subscribe_filtered_by_types(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(40):
            await store.append("order-1", [new("Wanted" if i % 8 == 0 else "Other", i=i)])
        async with subscription(store, types=["Wanted"]) as events:
            history = await take(events, 5)
            assert [e.data["i"] for e in history] == [0, 8, 16, 24, 32]
            await store.append("order-1", [new("Other", i=40), new("Other", i=41)])
            await store.append("order-1", [new("Wanted", i=42)])
            (live,) = await take(events, 1)
            assert live.data == {"i": 42}

    async def test_subscribe_filtered_by_category(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(40):
            await store.append("order-1" if i % 8 == 0 else f"user-{i}", [new(i=i)])
        async with subscription(store, category="order") as events:
            history = await take(events, 5)
            assert [e.data["i"] for e in history] == [0, 8, 16, 24, 32]
            await store.append("orders-1", [new(i=40)])
            await store.append("user-1", [new(i=41)])
            await store.append("order-7", [new(i=42)])
            (live,) = await take(events, 1)
            assert (live.stream, live.data) == ("order-7", {"i": 42})

    async def test_subscribe_filtered_by_types_and_category(self, store: EventStore) -> None:
        await store.append("order-1", [new("A", i=0), new("B", i=1)])
        await store.append("user-1", [new("A", i=2)])
        async with subscription(store, types=["A"], category="order") as events:
            assert [e.data["i"] for e in await take(events, 1)] == [0]
            await store.append("user-1", [new("A", i=3)])
            await store.append("order-1", [new("B", i=4), new("A", i=5)])
            assert [e.data["i"] for e in await take(events, 1)] == [5]

    async def test_subscribe_from_checkpoint_with_filter(self, store: EventStore) -> None:
        await store.append("order-1", [new("A", i=i) for i in range(10)])
        async with subscription(store, after=6, types=["A"]) as events:
            assert [e.position for e in await take(events, 4)] == [7, 8, 9, 10]

    async def test_subscribe_ends_when_store_closes(self, store: EventStore) -> None:
        """Closing the store finishes every `async for` over a subscription, waiting or not."""
        store.poll_interval = 60.0  # only the close can end the wait in time
        await store.append("order-1", numbered(3))
        caught_up = asyncio.Event()
        received: list[int] = []

        async def follow() -> None:
            async for event in store.subscribe():
                received.append(event.position)
                if len(received) == 3:
                    caught_up.set()

        async def idle() -> None:
            async for _ in store.subscribe(after=3):
                raise AssertionError("no event past position 3 was written")

        following = asyncio.create_task(follow())
        idling = asyncio.create_task(idle())
        async with asyncio.timeout(TIMEOUT):
            await caught_up.wait()
            await store.close()
            await asyncio.gather(following, idling)
        assert received == [1, 2, 3]

    # == soft delete ==========================================================================

    async def test_delete_hides_events_from_stream_reads(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        assert await versions(store, "order-1") == []
        assert await versions(store, "order-1", backwards=True) == []
        assert await versions(store, "order-1", from_version=1) == []
        assert await store.stream_version("order-1") is None

    async def test_delete_keeps_events_in_read_all(self, store: EventStore) -> None:
        """Nothing is removed from the log: projections and subscribers still see it all."""
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        assert await positions(store) == [1, 2, 3]
        assert await positions(store, category="order") == [1, 2, 3]
        assert await store.last_position() == 3

    async def test_delete_then_append_continues_versions(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        result = await store.append("order-1", numbered(2, start=10), expected_version=NO_STREAM)
        assert (result.last_version, result.last_position) == (4, 5)
        read = await collect(store.read_stream("order-1"))
        assert [(e.version, e.data["n"]) for e in read] == [(3, 10), (4, 11)]
        assert await versions(store, "order-1", backwards=True) == [4, 3]
        assert await store.stream_version("order-1") == 4
        assert await positions(store) == [1, 2, 3, 4, 5]

    async def test_delete_twice_then_append(self, store: EventStore) -> None:
        """Each soft delete hides what came before it, and only that."""
        await store.append("order-1", numbered(2))
        await store.delete_stream("order-1")
        await store.append("order-1", numbered(2, start=2))
        await store.delete_stream("order-1", expected_version=3)
        assert await versions(store, "order-1") == []
        await store.append("order-1", numbered(1, start=4), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [4]

    async def test_delete_with_expected_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.delete_stream("order-1", expected_version=1)
        assert (raised.value.stream, raised.value.expected, raised.value.actual) == (
            "order-1",
            1,
            2,
        )
        assert await versions(store, "order-1") == [0, 1, 2]
        await store.delete_stream("order-1", expected_version=2)
        assert await store.stream_version("order-1") is None

    async def test_delete_with_stream_exists_on_absent_stream_fails(
        self, store: EventStore
    ) -> None:
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.delete_stream("order-1", expected_version=STREAM_EXISTS)
        assert raised.value.actual is None

    async def test_delete_of_deleted_stream_expects_no_stream(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        await store.delete_stream("order-1", expected_version=NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream("order-1", expected_version=2)
        assert await store.stream_version("order-1") is None

    async def test_delete_leaves_other_streams_alone(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-10", numbered(2))
        await store.append("order", numbered(2))
        await store.delete_stream("order-1")
        assert await versions(store, "order-10") == [0, 1]
        assert await versions(store, "order") == [0, 1]

    # == tombstone (hard delete) ===============================================================

    async def test_tombstone_refuses_reads_and_appends_for_ever(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        for _ in range(2):  # and still after more traffic
            with pytest.raises(StreamDeleted) as raised:
                await store.append("order-1", [new()])
            assert raised.value.stream == "order-1"
            with pytest.raises(StreamDeleted):
                await collect(store.read_stream("order-1"))
            with pytest.raises(StreamDeleted):
                await collect(store.read_stream("order-1", backwards=True))
            with pytest.raises(StreamDeleted):
                await store.stream_version("order-1")
            with pytest.raises(StreamDeleted):
                await store.delete_stream("order-1")
            with pytest.raises(StreamDeleted):
                await store.tombstone_stream("order-1")
            await store.append("order-2", [new()])

    async def test_tombstone_refuses_reads_that_ask_for_nothing(self, store: EventStore) -> None:
        """``limit=0`` still names the stream: a tombstoned one must not read as empty."""
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await collect(store.read_stream("order-1", limit=0))

    async def test_tombstone_keeps_events_in_read_all(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        assert await positions(store) == [1, 2, 3]
        assert await store.last_position() == 3

    async def test_tombstone_refuses_idempotent_retry(self, store: EventStore) -> None:
        """Even a retry of an append that did land is refused: the stream is gone."""
        batch = [with_id()]
        await store.append("order-1", batch)
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.append("order-1", batch)

    async def test_tombstone_of_absent_stream_prevents_its_creation(
        self, store: EventStore
    ) -> None:
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.append("order-1", [new()], expected_version=NO_STREAM)
        assert await store.last_position() == 0

    async def test_tombstone_of_soft_deleted_stream(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.delete_stream("order-1")
        await store.tombstone_stream("order-1", expected_version=NO_STREAM)
        with pytest.raises(StreamDeleted):
            await store.append("order-1", [new()])

    async def test_tombstone_with_wrong_expected_version_changes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion):
            await store.tombstone_stream("order-1", expected_version=0)
        assert await store.stream_version("order-1") == 2
        await store.append("order-1", [new()], expected_version=2)

    async def test_tombstone_leaves_other_streams_alone(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-10", numbered(2))
        await store.tombstone_stream("order-1")
        assert await versions(store, "order-10") == [0, 1]
        await store.append("order-10", [new()], expected_version=1)

    async def test_tombstoned_stream_wakes_no_subscriber_and_hides_nothing(
        self, store: EventStore
    ) -> None:
        """A subscription already running keeps receiving the old and the new events."""
        await store.append("order-1", numbered(2))
        async with subscription(store) as events:
            assert [e.position for e in await take(events, 2)] == [1, 2]
            await store.tombstone_stream("order-1")
            await store.append("order-2", [new()])
            assert [e.position for e in await take(events, 1)] == [3]

    async def test_positions_are_never_reused_after_deletes(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.append("order-2", numbered(3))
        await store.delete_stream("order-1")
        await store.tombstone_stream("order-2")
        result = await store.append("order-3", numbered(2))
        assert result.first_position == 7
        result = await store.append("order-1", numbered(1))
        assert result.last_position == 9
        assert await positions(store) == list(range(1, 10))
        assert await store.last_position() == 9

    # == stream metadata =======================================================================

    async def test_metadata_max_count_keeps_newest(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=3))
        assert await versions(store, "order-1") == [7, 8, 9]
        assert await versions(store, "order-1", backwards=True) == [9, 8, 7]
        assert await versions(store, "order-1", from_version=2) == [7, 8, 9]
        assert await versions(store, "order-1", from_version=8) == [8, 9]
        assert await versions(store, "order-1", from_version=5, backwards=True) == []
        assert await versions(store, "order-1", limit=2) == [7, 8]
        assert await store.stream_version("order-1") == 9
        await store.append("order-1", numbered(1), expected_version=9)
        assert await versions(store, "order-1") == [8, 9, 10]

    async def test_metadata_max_count_with_paging(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(40))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=20))
        assert await versions(store, "order-1") == list(range(20, 40))
        assert await versions(store, "order-1", backwards=True) == list(range(39, 19, -1))

    async def test_metadata_truncate_before_hides_older_versions(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=4))
        assert await versions(store, "order-1") == [4, 5, 6, 7, 8, 9]
        assert await versions(store, "order-1", backwards=True) == [9, 8, 7, 6, 5, 4]
        assert await versions(store, "order-1", from_version=2, limit=2) == [4, 5]
        assert await versions(store, "order-1", from_version=3, backwards=True) == []
        assert await store.stream_version("order-1") == 9

    async def test_metadata_truncate_before_beyond_the_end_hides_all(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=10))
        assert await versions(store, "order-1") == []
        await store.append("order-1", numbered(10), expected_version=2)
        assert await versions(store, "order-1") == [10, 11, 12]

    async def test_metadata_rules_combine_each_can_hide(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=3, max_count=5))
        assert await versions(store, "order-1") == [5, 6, 7, 8, 9]
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=8, max_count=5))
        assert await versions(store, "order-1") == [8, 9]

    async def test_metadata_set_before_the_stream_exists(self, store: EventStore) -> None:
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=2))
        assert await store.stream_version("order-1") is None
        await store.append("order-1", numbered(5), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [3, 4]

    async def test_metadata_max_age_hides_old_events(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            for n in range(4):  # recorded at T0, T0+10s, T0+20s, T0+30s
                await store.append("order-1", [new(n=n)])
                clock.advance(10)
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=25))
            assert await versions(store, "order-1") == [2, 3]  # now T0+40s: ages 40, 30, 20, 10
            assert await versions(store, "order-1", backwards=True) == [3, 2]
            assert await store.stream_version("order-1") == 3
            assert await positions(store) == [1, 2, 3, 4]

    async def test_metadata_max_age_is_evaluated_at_read_time(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.append("order-1", numbered(2))
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=60))
            assert await versions(store, "order-1") == [0, 1]
            clock.advance(60)  # exactly max_age old: not older, still visible
            assert await versions(store, "order-1") == [0, 1]
            clock.advance(0.001)
            assert await versions(store, "order-1") == []
            await store.append("order-1", numbered(1))
            assert await versions(store, "order-1") == [2]

    async def test_metadata_max_age_longer_than_the_calendar_hides_nothing(
        self, tmp_path: Path
    ) -> None:
        """1e11 s (~3000 years) reaches before year 1: every event is younger than that."""
        async with self.make_store(tmp_path, clock=ManualClock()) as store:
            await store.append("order-1", numbered(2))
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=1e11))
            assert await versions(store, "order-1") == [0, 1]

    async def test_metadata_does_not_hide_events_from_read_all(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=1, truncate_before=4))
        assert await positions(store) == [1, 2, 3, 4, 5]
        async with subscription(store) as events:
            assert [e.position for e in await take(events, 5)] == [1, 2, 3, 4, 5]

    async def test_metadata_round_trips(self, store: EventStore) -> None:
        assert await store.get_stream_metadata("order-1") == StreamMetadata()
        metadata = StreamMetadata(truncate_before=2, max_count=5, max_age=3600.5)
        await store.set_stream_metadata("order-1", metadata)
        assert await store.get_stream_metadata("order-1") == metadata
        replaced = StreamMetadata(max_count=1)
        await store.set_stream_metadata("order-1", replaced)
        assert await store.get_stream_metadata("order-1") == replaced
        assert await store.get_stream_metadata("order-2") == StreamMetadata()

    async def test_metadata_cleared_shows_events_again(self, store: EventStore) -> None:
        """Metadata hides, never deletes: removing the rule brings the events back."""
        await store.append("order-1", numbered(5))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=1))
        await store.set_stream_metadata("order-1", StreamMetadata())
        assert await versions(store, "order-1") == [0, 1, 2, 3, 4]

    async def test_metadata_very_large_values(self, store: EventStore) -> None:
        """Limits are Python ints: past 64 bits they still mean 'everything' or 'nothing'."""
        await store.append("order-1", numbered(3))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=2**64))
        assert await versions(store, "order-1") == [0, 1, 2]
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=2**64))
        assert await versions(store, "order-1") == []

    @pytest.mark.parametrize(
        "metadata",
        [
            StreamMetadata(max_count=0),
            StreamMetadata(max_count=-1),
            StreamMetadata(truncate_before=-1),
            StreamMetadata(max_age=0),
            StreamMetadata(max_age=-5.0),
            StreamMetadata(max_age=math.nan),
            StreamMetadata(max_count=True),
            StreamMetadata(truncate_before=1.5),  # type: ignore[arg-type]
            {"max_count": 3},
        ],
        ids=[
            "max_count_0",
            "max_count_negative",
            "truncate_before_negative",
            "max_age_0",
            "max_age_negative",
            "max_age_nan",
            "max_count_bool",
            "truncate_before_float",
            "plain_dict",
        ],
    )
    async def test_metadata_invalid_is_value_error(self, store: EventStore, metadata: Any) -> None:
        await store.append("order-1", numbered(3))
        with pytest.raises(ValueError):
            await store.set_stream_metadata("order-1", metadata)
        assert await store.get_stream_metadata("order-1") == StreamMetadata()
        assert await versions(store, "order-1") == [0, 1, 2]

    # == invalid input ==========================================================================

    @pytest.mark.parametrize("name", list(_INVALID_NAMES))
    async def test_invalid_stream_name_is_refused_everywhere(
        self, store: EventStore, name: str
    ) -> None:
        """Every call naming a stream checks the name before touching the store."""
        bad: Any = _INVALID_NAMES[name]
        with pytest.raises(ValueError):
            await store.append(bad, [new()])
        with pytest.raises(ValueError):
            await collect(store.read_stream(bad))
        with pytest.raises(ValueError):
            await store.stream_version(bad)
        with pytest.raises(ValueError):
            await store.delete_stream(bad)
        with pytest.raises(ValueError):
            await store.tombstone_stream(bad)
        with pytest.raises(ValueError):
            await store.set_stream_metadata(bad, StreamMetadata(max_count=1))
        with pytest.raises(ValueError):
            await store.get_stream_metadata(bad)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", list(_INVALID_NAMES))
    async def test_invalid_event_type_is_refused(self, store: EventStore, name: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [new(), NewEvent(_INVALID_NAMES[name], {})])
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", ["empty", "newline", "dollar", "201_chars", "int", "bytes"])
    async def test_invalid_category_filter_is_refused(self, store: EventStore, name: str) -> None:
        bad: Any = _INVALID_NAMES[name]
        with pytest.raises(ValueError):
            await collect(store.read_all(category=bad))
        with pytest.raises(ValueError):
            await anext(store.subscribe(category=bad))

    async def test_invalid_stream_name_at_200_characters_is_fine(self, store: EventStore) -> None:
        name = "x" * 200
        await store.append(name, [new()])
        assert await versions(store, name) == [0]
        assert (await log_of(store))[0].stream == name

    @pytest.mark.parametrize("kind", list(_NOT_JSON))
    async def test_invalid_data_not_json_is_refused(self, store: EventStore, kind: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", _NOT_JSON[kind])])
        assert await store.last_position() == 0

    @pytest.mark.parametrize("kind", ["set", "datetime", "nan", "int_key"])
    async def test_invalid_metadata_not_json_is_refused(self, store: EventStore, kind: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {}, metadata=_NOT_JSON[kind])])
        assert await store.last_position() == 0

    @pytest.mark.parametrize(
        "data", [[1, 2], "text", None, 42, ("a", 1)], ids=["list", "str", "none", "int", "tuple"]
    )
    async def test_invalid_data_not_a_dict_is_refused(self, store: EventStore, data: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", data)])
        assert await store.last_position() == 0

    async def test_invalid_empty_event_list_is_refused(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [])
        with pytest.raises(ValueError):
            await store.append("order-1", ())
        assert await store.stream_version("order-1") is None

    @pytest.mark.parametrize(
        "events",
        [
            new(),
            (e for e in [new()]),
            [{"type": "A", "data": {}}],
            ["A"],
            None,
        ],
        ids=["bare_event", "generator", "dict", "str", "none"],
    )
    async def test_invalid_events_argument_is_refused(self, store: EventStore, events: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", events)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("event_id", ["not-a-uuid", 42, uuid.uuid4().bytes])
    async def test_invalid_event_id_is_refused(self, store: EventStore, event_id: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {}, id=event_id)])
        assert await store.last_position() == 0

    async def test_invalid_event_over_max_event_size(self, tmp_path: Path) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            await store.append("order-1", [new(blob="x" * 500)])
            with pytest.raises(ValueError, match="1000"):
                await store.append("order-1", [new(blob="x" * 1001)])
            with pytest.raises(ValueError):  # metadata counts too
                await store.append("order-1", [NewEvent("A", {}, metadata={"m": "x" * 1001})])
            assert await store.last_position() == 1

    async def test_invalid_event_over_default_max_event_size(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [new(blob="x" * (1024 * 1024 + 1))])
        assert await store.last_position() == 0

    @pytest.mark.parametrize(
        "expected",
        [-1, True, False, "x", "any", None, 1.5, [0]],
        ids=["negative", "true", "false", "str", "str_any", "none", "float", "list"],
    )
    async def test_invalid_expected_version_is_refused(
        self, store: EventStore, expected: Any
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await store.append("order-1", [new()], expected_version=expected)
        with pytest.raises(ValueError):
            await store.delete_stream("order-1", expected_version=expected)
        with pytest.raises(ValueError):
            await store.tombstone_stream("order-1", expected_version=expected)
        assert await versions(store, "order-1") == [0]

    async def test_invalid_types_filter_bare_string_is_refused(self, store: EventStore) -> None:
        """``types="OrderPlaced"`` would silently filter by letters; it is refused."""
        await store.append("order-1", [new("A")])
        with pytest.raises(ValueError):
            await collect(store.read_all(types="A"))
        with pytest.raises(ValueError):
            await anext(store.subscribe(types="A"))

    @pytest.mark.parametrize(
        "read",
        [
            {"from_version": -1},
            {"from_version": True},
            {"from_version": "1"},
            {"limit": -1},
            {"limit": 1.0},
        ],
        ids=["from_negative", "from_bool", "from_str", "limit_negative", "limit_float"],
    )
    async def test_invalid_read_stream_arguments(
        self, store: EventStore, read: dict[str, Any]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await collect(store.read_stream("order-1", **read))

    @pytest.mark.parametrize(
        "read",
        [{"after": -1}, {"after": None}, {"after": True}, {"limit": -1}, {"limit": "5"}],
        ids=["after_negative", "after_none", "after_bool", "limit_negative", "limit_str"],
    )
    async def test_invalid_read_all_arguments(
        self, store: EventStore, read: dict[str, Any]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await collect(store.read_all(**read))

    async def test_invalid_subscribe_after(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await anext(store.subscribe(after=-1))

    # == hostile strings ========================================================================

    @pytest.mark.parametrize("name", list(_HOSTILE_NAMES))
    async def test_hostile_strings_round_trip(self, store: EventStore, name: str) -> None:
        """Names, types and data that break naive SQL or formatting are just strings."""
        hostile = _HOSTILE_NAMES[name]
        category = hostile.split("-", 1)[0]
        await store.append("control-1", [new()])
        data = {hostile: hostile, "list": [hostile], "nested": {hostile: {"k": hostile}}}
        result = await store.append(
            hostile,
            [NewEvent(hostile, data, metadata={hostile: hostile}), NewEvent(hostile, {})],
            expected_version=NO_STREAM,
        )
        assert (result.last_version, result.last_position) == (1, 3)
        read = await collect(store.read_stream(hostile))
        assert [(e.stream, e.type, e.version) for e in read] == [
            (hostile, hostile, 0),
            (hostile, hostile, 1),
        ]
        assert read[0].data == data
        assert read[0].metadata == {hostile: hostile}
        assert read[0].category == category
        assert await store.stream_version(hostile) == 1
        assert await positions(store, types=[hostile]) == [2, 3]
        assert [e.stream for e in await collect(store.read_all(category=category))] == [
            hostile,
            hostile,
        ]
        await store.append(hostile, [NewEvent(hostile, {})], expected_version=1)
        await store.set_stream_metadata(hostile, StreamMetadata(max_count=1))
        assert await versions(store, hostile) == [2]
        # Nothing else was touched, and the store still works.
        assert await versions(store, "control-1") == [0]
        await store.append("control-1", [new()], expected_version=0)
        assert await store.last_position() == 5

    @pytest.mark.parametrize("name", ["sql_injection", "qmark", "emoji", "rtl"])
    async def test_hostile_stream_delete_and_tombstone(self, store: EventStore, name: str) -> None:
        hostile = _HOSTILE_NAMES[name]
        await store.append(hostile, numbered(2))
        await store.append("control-1", numbered(2))
        await store.delete_stream(hostile)
        assert await versions(store, hostile) == []
        await store.tombstone_stream(hostile)
        with pytest.raises(StreamDeleted):
            await store.append(hostile, [new()])
        assert await versions(store, "control-1") == [0, 1]

    async def test_hostile_similar_looking_names_are_different_streams(
        self, store: EventStore
    ) -> None:
        """No normalisation: composed/decomposed, case and trailing spaces all differ."""
        names = ["\u00e9-1", "e\u0301-1", "E\u0301-1", "é-1 ", "é -1"]
        for i, name in enumerate(names):
            await store.append(name, [new(i=i)], expected_version=NO_STREAM)
        for i, name in enumerate(names):
            assert [e.data for e in await collect(store.read_stream(name))] == [{"i": i}]
        assert await positions(store, category="\u00e9") == [1, 4]

    # == lifecycle =============================================================================

    async def test_lifecycle_unopened_store_raises_store_closed(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        assert not store.is_open
        await self._assert_closed(store)

    async def test_lifecycle_closed_store_raises_store_closed(self, store: EventStore) -> None:
        await store.append("order-1", [new()])
        await store.close()
        assert not store.is_open
        await self._assert_closed(store)
        await store.close()  # closing twice is harmless

    async def _assert_closed(self, store: EventStore) -> None:
        with pytest.raises(StoreClosed):
            await store.append("order-1", [new()])
        with pytest.raises(StoreClosed):
            await collect(store.read_stream("order-1"))
        with pytest.raises(StoreClosed):
            await collect(store.read_all())
        with pytest.raises(StoreClosed):
            await anext(store.subscribe())
        with pytest.raises(StoreClosed):
            await store.stream_version("order-1")
        with pytest.raises(StoreClosed):
            await store.last_position()
        with pytest.raises(StoreClosed):
            await store.delete_stream("order-1")
        with pytest.raises(StoreClosed):
            await store.tombstone_stream("order-1")
        with pytest.raises(StoreClosed):
            await store.set_stream_metadata("order-1", StreamMetadata(max_count=1))
        with pytest.raises(StoreClosed):
            await store.get_stream_metadata("order-1")

    async def test_lifecycle_reopened_store_keeps_its_events(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        async with store:
            await store.append("order-1", numbered(3))
            await store.append("order-2", numbered(1))
            await store.tombstone_stream("order-2")
        async with store:
            await store.open()  # opening twice is harmless
            assert await versions(store, "order-1") == [0, 1, 2]
            assert await store.last_position() == 4
            with pytest.raises(StreamDeleted):
                await store.stream_version("order-2")
            result = await store.append("order-1", [new()], expected_version=2)
            assert result.last_position == 5


# == model-based test ==========================================================================

_MODEL_STREAMS: Final = ("order-1", "order-2", "user-1", "user", "q'%s?-1")
_MODEL_TYPES: Final = ("Created", "Renamed", "Closed'")
_MODEL_CATEGORIES: Final = ("order", "user", "q'%s?", "missing")

Outcome = tuple[str, object]
"""What a call did, comparable across store and model: ("ok", value) or ("error", details)."""


@dataclasses.dataclass(frozen=True)
class _Written:
    """An event as the model remembers it; ``id`` is None when the store chose it."""

    id: uuid.UUID | None
    stream: str
    version: int
    position: int
    type: str
    data: dict[str, Any]


@dataclasses.dataclass
class _ModelStream:
    events: list[_Written] = dataclasses.field(default_factory=list)
    metadata: StreamMetadata = dataclasses.field(default_factory=StreamMetadata)
    deleted: bool = False
    tombstoned: bool = False

    @property
    def version(self) -> int | None:
        return None if self.deleted or not self.events else self.events[-1].version


class _Model:
    """The contract in plain lists and dicts, written from DESIGN.md rather than a backend."""

    def __init__(self) -> None:
        self.log: list[_Written] = []
        self.streams: dict[str, _ModelStream] = {}
        self.ids: dict[uuid.UUID, _Written] = {}

    def _live(self, stream: str) -> _ModelStream:
        state = self.streams.setdefault(stream, _ModelStream())
        if state.tombstoned:
            raise StreamDeleted(stream)
        return state

    @staticmethod
    def _check(stream: str, expected: ExpectedVersion, actual: int | None) -> None:
        if expected is ANY:
            ok = True
        elif expected is NO_STREAM:
            ok = actual is None
        elif expected is STREAM_EXISTS:
            ok = actual is not None
        else:
            ok = expected == actual
        if not ok:
            raise WrongExpectedVersion(stream, expected, actual)

    def append(
        self, stream: str, events: Sequence[NewEvent], expected: ExpectedVersion
    ) -> AppendResult:
        given = [e.id for e in events if e.id is not None]
        if len(given) != len(set(given)):
            raise ValueError("duplicate id in one batch")
        state = self._live(stream)
        found = [self.ids.get(e.id) if e.id is not None else None for e in events]
        earlier = [w for w in found if w is not None]
        if earlier:
            # A retry is the very same batch, in this stream, in order, at the same place.
            first = earlier[0].version
            if (
                len(earlier) != len(events)
                or any(w.stream != stream for w in earlier)
                or [w.version for w in earlier] != list(range(first, first + len(events)))
                or (isinstance(expected, int) and first != expected + 1)
            ):
                raise IdempotencyConflict(stream, "ids clash")
            return AppendResult(earlier[-1].version, earlier[-1].position, len(events))
        self._check(stream, expected, state.version)
        state.deleted = False
        next_version = state.events[-1].version + 1 if state.events else 0
        for offset, event in enumerate(events):
            written = _Written(
                event.id,
                stream,
                next_version + offset,
                len(self.log) + 1,
                event.type,
                event.data,
            )
            self.log.append(written)
            state.events.append(written)
            if event.id is not None:
                self.ids[event.id] = written
        return AppendResult(state.events[-1].version, len(self.log), len(events))

    def delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        state = self._live(stream)
        self._check(stream, expected, state.version)
        if hard:
            state.tombstoned = True
        elif state.version is not None:
            state.deleted = True
            state.metadata = msgspec.structs.replace(
                state.metadata, truncate_before=state.events[-1].version + 1
            )

    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        self.streams.setdefault(stream, _ModelStream()).metadata = metadata

    def get_metadata(self, stream: str) -> StreamMetadata:
        return self.streams.get(stream, _ModelStream()).metadata

    def stream_version(self, stream: str) -> int | None:
        return self._live(stream).version

    def read_stream(
        self, stream: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[_Written]:
        state = self._live(stream)
        if not state.events:
            return []
        last = state.events[-1].version
        first = state.metadata.truncate_before or 0
        if state.metadata.max_count is not None:
            first = max(first, last - state.metadata.max_count + 1)
        if backwards:
            start = last if from_version is None else min(from_version, last)
            chosen = range(start, first - 1, -1)
        else:
            chosen = range(max(first, from_version or 0), last + 1)
        return [state.events[v] for v in chosen][:limit]

    def read_all(
        self, after: int, limit: int | None, types: list[str] | None, category: str | None
    ) -> list[_Written]:
        matching = [
            e
            for e in self.log[after:]
            if (types is None or e.type in types)
            and (category is None or e.stream.split("-", 1)[0] == category)
        ]
        return matching[:limit]


def _failure(error: Exception) -> Outcome:
    """The parts of an error both sides must agree on."""
    if isinstance(error, WrongExpectedVersion):
        return ("error", (type(error), error.stream, error.expected, error.actual))
    if isinstance(error, StreamDeleted | IdempotencyConflict):
        return ("error", (type(error), error.stream))
    return ("error", (type(error),))


def _model_outcome(call: Callable[[], object]) -> Outcome:
    try:
        return ("ok", call())
    except (ValueError, StreamDeleted, WrongExpectedVersion) as error:
        return _failure(error)


def _same_events(model: list[_Written], store: list[RecordedEvent]) -> bool:
    return len(model) == len(store) and all(
        (m.stream, m.version, m.position, m.type, m.data)
        == (s.stream, s.version, s.position, s.type, s.data)
        and (m.id is None or m.id == s.id)
        for m, s in zip(model, store, strict=True)
    )


_EXPECTED = st.one_of(
    st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, "current"]), st.integers(0, 8)
)
"""An expected version: the three states, the stream's current version, or any small int."""

Batch = tuple[str, tuple[NewEvent, ...]]


_GROUPED_APPEND = st.tuples(
    st.sampled_from(["new", "new_with_ids", "again_in_group", "again_earlier"]),
    st.sampled_from(_MODEL_STREAMS),
    st.integers(1, 3),
    _EXPECTED,
    st.integers(0, 1000),
)
"""One of several appends sent at once: (kind, stream, size, expected, which batch)."""


def store_model_test(
    make_store: Callable[[Path], EventStore], *, page_size: int = 3, fifo_appends: bool = False
) -> type[RuleBasedStateMachine]:
    """A hypothesis state machine that runs random operations on a backend and on a plain
    model of the contract, and fails at the first call where they disagree.

    ``make_store(directory)`` returns a new, empty, unopened store (``directory`` is a fresh
    temporary directory, removed afterwards). Run it as a test with
    ``TestModel = store_model_test(...).TestCase``; settings can be changed on ``TestCase``.

    ``fifo_appends=True`` says the backend applies appends started together in the order
    they were called (true of the memory and SQLite stores, whose single writer takes them
    from one queue); the machine then also sends groups of appends at once, and checks each
    outcome against the model applied in call order. That reaches the code that checks
    several appends in one transaction, which sequential calls never do.
    """

    class StoreModelTest(RuleBasedStateMachine):
        """Random appends, reads and deletes; the store must answer like the model."""

        batches = Bundle("batches")

        def __init__(self) -> None:
            super().__init__()
            self.directory = Path(tempfile.mkdtemp(prefix="eskit-model-"))
            self.runner = asyncio.Runner()
            self.model = _Model()
            self.counter = 0
            self.sent: list[tuple[str, tuple[NewEvent, ...]]] = []
            self.store = make_store(self.directory)
            self.store.page_size = page_size  # small pages: every read crosses boundaries
            self.runner.run(self.store.open())

        def teardown(self) -> None:
            try:
                self.runner.run(self.store.close())
            finally:
                self.runner.close()
                shutil.rmtree(self.directory, ignore_errors=True)

        # -- running both sides ----------------------------------------------------------

        def _store_outcome(self, call: Callable[[], Any]) -> Outcome:
            try:
                return ("ok", self.runner.run(call()))
            except (ValueError, StreamDeleted, WrongExpectedVersion) as error:
                return _failure(error)

        def _resolve(self, stream: str, expected: object) -> ExpectedVersion:
            if expected != "current":
                return cast(ExpectedVersion, expected)
            state = self.model.streams.get(stream)
            version = None if state is None or state.tombstoned else state.version
            return NO_STREAM if version is None else version

        def _events(self, size: int, type_: str, with_ids: bool) -> tuple[NewEvent, ...]:
            events = []
            for _ in range(size):
                self.counter += 1
                event_id = uuid.uuid4() if with_ids else None
                events.append(NewEvent(type_, {"n": self.counter}, id=event_id))
            return tuple(events)

        def _append(self, stream: str, events: Sequence[NewEvent], expected: object) -> None:
            self.sent.append((stream, tuple(events)))
            version = self._resolve(stream, expected)
            model = _model_outcome(lambda: self.model.append(stream, events, version))
            store = self._store_outcome(lambda: self.store.append(stream, events, version))
            assert store == model, f"append({stream!r}, {len(events)} events, {version!r})"

        # -- rules ------------------------------------------------------------------------

        @rule(
            target=batches,
            stream=st.sampled_from(_MODEL_STREAMS),
            size=st.integers(1, 4),
            type_=st.sampled_from(_MODEL_TYPES),
            expected=_EXPECTED,
            with_ids=st.booleans(),
        )
        def append(
            self, stream: str, size: int, type_: str, expected: object, with_ids: bool
        ) -> object:
            events = self._events(size, type_, with_ids)
            self._append(stream, events, expected)
            return (stream, events) if with_ids else multiple()

        @rule(
            batch=batches,
            stream=st.none() | st.sampled_from(_MODEL_STREAMS),
            expected=_EXPECTED,
            change=st.sampled_from(["same", "extended", "reversed", "truncated", "doubled"]),
        )
        def append_again(
            self, batch: Batch, stream: str | None, expected: object, change: str
        ) -> None:
            """Retries and id clashes: a batch sent again, as is or altered."""
            original_stream, events = batch
            altered = {
                "same": list(events),
                "extended": [*events, *self._events(1, "Created", True)],
                "reversed": list(reversed(events)),
                "truncated": list(events[:-1]) or list(events),
                "doubled": [*events, events[0]],
            }[change]
            self._append(stream or original_stream, altered, expected)

        @precondition(lambda self: fifo_appends)
        @rule(group=st.lists(_GROUPED_APPEND, min_size=2, max_size=6))
        def append_concurrently(self, group: list[tuple[str, str, int, object, int]]) -> None:
            """Racing writers: expected versions are read before any of them lands."""
            calls: list[tuple[str, tuple[NewEvent, ...], ExpectedVersion]] = []
            for kind, stream, size, expected, which in group:
                version = self._resolve(stream, expected)
                if kind == "again_in_group" and calls:
                    stream, events, _ = calls[which % len(calls)]
                elif kind == "again_earlier" and self.sent:
                    stream, events = self.sent[which % len(self.sent)]
                else:
                    events = self._events(size, "Created", with_ids=kind != "new")
                calls.append((stream, events, version))
            self.sent += [(stream, events) for stream, events, _ in calls]

            async def race() -> list[Outcome]:
                results = await asyncio.gather(
                    *(self.store.append(*call) for call in calls), return_exceptions=True
                )
                return [
                    _failure(r)
                    if isinstance(r, ValueError | StreamDeleted | WrongExpectedVersion)
                    else ("ok", r)
                    for r in results
                ]

            stored = self.runner.run(race())
            modelled = [_model_outcome(functools.partial(self.model.append, *c)) for c in calls]
            assert stored == modelled, calls

        @rule(
            stream=st.sampled_from(_MODEL_STREAMS),
            from_version=st.none() | st.integers(0, 12),
            backwards=st.booleans(),
            limit=st.none() | st.integers(0, 8),
        )
        def read_stream(
            self, stream: str, from_version: int | None, backwards: bool, limit: int | None
        ) -> None:
            model = _model_outcome(
                lambda: self.model.read_stream(stream, from_version, backwards, limit)
            )
            store = self._store_outcome(
                lambda: collect(self.store.read_stream(stream, from_version, backwards, limit))
            )
            if model[0] == "ok" and store[0] == "ok":
                model_events = cast(list[_Written], model[1])
                store_events = cast(list[RecordedEvent], store[1])
                assert _same_events(model_events, store_events), (model_events, store_events)
            else:
                assert store == model

        @rule(
            after=st.integers(0, 40),
            limit=st.none() | st.integers(0, 12),
            types=st.none() | st.lists(st.sampled_from(_MODEL_TYPES), max_size=2),
            category=st.none() | st.sampled_from(_MODEL_CATEGORIES),
        )
        def read_all(
            self, after: int, limit: int | None, types: list[str] | None, category: str | None
        ) -> None:
            model_events = self.model.read_all(after, limit, types, category)
            store_events = self.runner.run(
                collect(self.store.read_all(after, limit, types, category))
            )
            assert _same_events(model_events, store_events), (model_events, store_events)

        @rule(stream=st.sampled_from(_MODEL_STREAMS))
        def stream_version(self, stream: str) -> None:
            model = _model_outcome(lambda: self.model.stream_version(stream))
            assert self._store_outcome(lambda: self.store.stream_version(stream)) == model

        @rule(stream=st.sampled_from(_MODEL_STREAMS), expected=_EXPECTED)
        def delete_stream(self, stream: str, expected: object) -> None:
            version = self._resolve(stream, expected)
            model = _model_outcome(lambda: self.model.delete(stream, version, hard=False))
            store = self._store_outcome(lambda: self.store.delete_stream(stream, version))
            assert store == model, f"delete_stream({stream!r}, {version!r})"

        @precondition(lambda self: self.counter > 0)  # tombstones first make dull runs
        @rule(stream=st.sampled_from(_MODEL_STREAMS), expected=_EXPECTED)
        def tombstone_stream(self, stream: str, expected: object) -> None:
            version = self._resolve(stream, expected)
            model = _model_outcome(lambda: self.model.delete(stream, version, hard=True))
            store = self._store_outcome(lambda: self.store.tombstone_stream(stream, version))
            assert store == model, f"tombstone_stream({stream!r}, {version!r})"

        @rule(
            stream=st.sampled_from(_MODEL_STREAMS),
            truncate_before=st.none() | st.integers(0, 6),
            max_count=st.none() | st.integers(1, 5),
        )
        def set_stream_metadata(
            self, stream: str, truncate_before: int | None, max_count: int | None
        ) -> None:
            metadata = StreamMetadata(truncate_before=truncate_before, max_count=max_count)
            self.model.set_metadata(stream, metadata)
            self.runner.run(self.store.set_stream_metadata(stream, metadata))

        @rule(stream=st.sampled_from(_MODEL_STREAMS))
        def get_stream_metadata(self, stream: str) -> None:
            stored = self.runner.run(self.store.get_stream_metadata(stream))
            assert stored == self.model.get_metadata(stream)

        @invariant()
        def last_position_matches(self) -> None:
            assert self.runner.run(self.store.last_position()) == len(self.model.log)

    StoreModelTest.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return StoreModelTest
