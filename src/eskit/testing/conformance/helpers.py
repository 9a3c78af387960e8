"""Shared pieces of the conformance suite: helpers, a manual clock, example data, the base."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as dt
import decimal
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import pytest

from eskit.store.base import EventStore
from eskit.store.model import NewEvent, RecordedEvent

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


def nested(depth: int) -> dict[str, Any]:
    """A JSON object nested ``depth`` levels deep, itself counted: ``{"a": [{"a": [...]}]}``
    (its innermost container at ``data.a[0].a[0]...``)."""
    value: Any = 1
    for level in range(depth, 0, -1):
        value = {"a": value} if level % 2 else [value]
    return cast(dict[str, Any], value)


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

PAYLOADS: Final[dict[str, dict[str, Any]]] = {
    "empty": {},
    "unicode": {"text": "héllo wörld ✓ 😀 שלום 中文 e\u0301", "ключ": "значение", "": ""},
    "nested": {"a": [1, [2, [3, []]], {"b": [{"c": None}, {}]}], "d": {"e": {"f": {"g": []}}}},
    "floats": {"f": [0.1, -2.5e-300, 1.7976931348623157e308, 5e-324, 1.0, -0.0, 1e16]},
    "big_ints": {"i": [2**63 - 1, -(2**63), 2**64, 10**30, -(10**30), 0, -1]},
    "scalars": {"true": True, "false": False, "null": None, "empty": "", "zero": 0},
    "escapes": {"s": 'quote " backslash \\ nul \x00 newline \n tab \t \u2028 </script>'},
}

NOT_JSON: Final[dict[str, dict[Any, Any]]] = {
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

INVALID_NAMES: Final[dict[str, Any]] = {
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

HOSTILE_NAMES: Final[dict[str, str]] = {
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


class ConformanceBase(abc.ABC):
    """What every part of the suite relies on: the store factory and the fixtures.

    Defined once here; the mixins in this package derive from it and ``EventStoreConformance``
    combines them.
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
