"""The model-based test: random operations on a backend and on a plain model of the contract."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import msgspec
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

from eskit.errors import IdempotencyConflict, StreamDeleted, WrongExpectedVersion
from eskit.store.base import EventStore
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RawData,
    RecordedEvent,
    StreamMetadata,
)
from eskit.testing.conformance.helpers import collect

__all__ = ["store_model_test"]

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
    data: dict[str, Any] | RawData
    raw_metadata: bytes | None = None


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
        return self.append_many([(stream, events, expected)])[0]

    def append_many(
        self, appends: Sequence[tuple[str, Sequence[NewEvent], ExpectedVersion]]
    ) -> list[AppendResult]:
        """Check every append, then write those that are not retries; all or nothing."""
        streams = [stream for stream, _, _ in appends]
        given = [e.id for _, events, _ in appends for e in events if e.id is not None]
        if len(given) != len(set(given)) or len(streams) != len(set(streams)):
            raise ValueError("duplicate id or stream in one call")
        retries = [self._retried(*append) for append in appends]
        return [
            self._write(stream, events) if retry is None else retry
            for (stream, events, _), retry in zip(appends, retries, strict=True)
        ]

    def _retried(
        self, stream: str, events: Sequence[NewEvent], expected: ExpectedVersion
    ) -> AppendResult | None:
        """The original result if this is a retry, None if it is new; raises if refused."""
        state = self._live(stream)
        found = [self.ids.get(e.id) if e.id is not None else None for e in events]
        earlier = [w for w in found if w is not None]
        if not earlier:
            self._check(stream, expected, state.version)
            return None
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

    def _write(self, stream: str, events: Sequence[NewEvent]) -> AppendResult:
        state = self.streams[stream]
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
                event.metadata.body if isinstance(event.metadata, RawData) else None,
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
        self,
        after: int,
        limit: int | None,
        types: list[str] | None,
        category: str | None,
        backwards: bool = False,
        before: int | None = None,
    ) -> list[_Written]:
        end = len(self.log) if before is None else max(0, before - 1)  # position < before
        log = self.log[after:end]
        matching = [
            e
            for e in (reversed(log) if backwards else log)
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
        (m.stream, m.version, m.position, m.type, m.data, m.raw_metadata)
        == (
            s.stream,
            s.version,
            s.position,
            s.type,
            s.data if s.raw is None else s.raw,
            s.raw_metadata,
        )
        and (m.id is None or m.id == s.id)
        for m, s in zip(model, store, strict=True)
    )


_EXPECTED = st.one_of(
    st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, "current"]), st.integers(0, 8)
)
"""An expected version: the three states, the stream's current version, or any small int."""

Batch = tuple[str, tuple[NewEvent, ...]]

_CONTENT_TYPES = ["application/json", "application/octet-stream", ""]


_MANY_PART = st.tuples(
    st.sampled_from(["new", "new_with_ids", "again_earlier"]),
    st.sampled_from(_MODEL_STREAMS),
    st.integers(1, 3),
    _EXPECTED,
    st.integers(0, 1000),
)
"""One part of an append_many: (kind, stream, size, expected, which earlier batch)."""

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
            target=batches,
            stream=st.sampled_from(_MODEL_STREAMS),
            data=st.lists(
                st.builds(RawData, st.sampled_from(_CONTENT_TYPES), st.binary(max_size=300)),
                min_size=1,
                max_size=3,
            ),
            metadata=st.none() | st.binary(max_size=100),
            expected=_EXPECTED,
        )
        def append_raw(
            self, stream: str, data: list[RawData], metadata: bytes | None, expected: object
        ) -> object:
            """Payloads that are not JSON objects, arbitrary bytes, kept byte for byte."""
            meta = None if metadata is None else RawData("", metadata)
            events = tuple(NewEvent("Raw", raw, meta, uuid.uuid4()) for raw in data)
            self._append(stream, events, expected)
            return (stream, events)

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

        @rule(target=batches, parts=st.lists(_MANY_PART, min_size=1, max_size=4))
        def append_many(self, parts: list[tuple[str, str, int, object, int]]) -> object:
            """Several streams at once: retries of earlier batches among new appends, and
            now and then a stream or id twice (refused as a whole)."""
            appends: list[tuple[str, tuple[NewEvent, ...], ExpectedVersion]] = []
            for kind, stream, size, expected, which in parts:
                if kind == "again_earlier" and self.sent:
                    stream, events = self.sent[which % len(self.sent)]
                else:
                    events = self._events(size, "Created", with_ids=kind != "new")
                appends.append((stream, events, self._resolve(stream, expected)))
            self.sent += [(stream, events) for stream, events, _ in appends]
            model = _model_outcome(lambda: self.model.append_many(appends))
            store = self._store_outcome(
                lambda: self.store.append_many([Append(*append) for append in appends])
            )
            assert store == model, appends
            return multiple(*((s, e) for s, e, _ in appends if e[0].id is not None))

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

        @rule(
            after=st.integers(0, 40),
            before=st.none() | st.integers(0, 45),
            limit=st.none() | st.integers(0, 12),
            types=st.none() | st.lists(st.sampled_from(_MODEL_TYPES), max_size=2),
            category=st.none() | st.sampled_from(_MODEL_CATEGORIES),
        )
        def read_all_backwards(
            self,
            after: int,
            before: int | None,
            limit: int | None,
            types: list[str] | None,
            category: str | None,
        ) -> None:
            model_events = self.model.read_all(after, limit, types, category, True, before)
            read = self.store.read_all(after, limit, types, category, backwards=True, before=before)
            store_events = self.runner.run(collect(read))
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
            custom=st.none()
            | st.dictionaries(st.text(max_size=5), st.integers(-(2**53), 2**53) | st.text()),
        )
        def set_stream_metadata(
            self,
            stream: str,
            truncate_before: int | None,
            max_count: int | None,
            custom: dict[str, Any] | None,
        ) -> None:
            metadata = StreamMetadata(truncate_before, max_count, custom=custom)
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
