"""The blocking facade: same API and errors as the async store, live subscriptions, no leaks."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eskit
import eskit.store
import eskit.sync
from eskit import NO_STREAM, NewEvent, StoreClosed, StreamDeleted, WrongExpectedVersion
from eskit.store import EventStore
from eskit.store.model import StreamMetadata
from eskit.sync import SyncStore


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def store(url: str) -> Iterator[SyncStore]:
    with eskit.sync.open_store(url) as opened:
        yield opened


def events(count: int, type_: str = "Happened") -> list[NewEvent]:
    return [NewEvent(type_, {"n": n}) for n in range(count)]


# -- the facade cannot fall behind the async API ----------------------------------------------


def test_every_public_async_method_has_a_blocking_twin() -> None:
    async_methods = {
        name: member
        for name, member in inspect.getmembers(EventStore)
        if not name.startswith("_")
        and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    }
    assert {"append", "read_all", "subscribe", "open", "close"} <= async_methods.keys()
    for name, method in async_methods.items():
        twin = getattr(SyncStore, name, None)
        assert twin is not None, f"SyncStore has no blocking {name}()"
        assert not inspect.iscoroutinefunction(twin), name
        assert not inspect.isasyncgenfunction(twin), name
        assert parameters(twin) == parameters(method), f"SyncStore.{name} differs"


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


# -- the API, blocking --------------------------------------------------------------------------


def test_append_and_a_conflict_raise_the_async_errors(store: SyncStore) -> None:
    result = store.append("invoice-42", events(2), expected_version=NO_STREAM)
    assert (result.last_version, result.last_position, result.count) == (1, 2, 2)

    with pytest.raises(WrongExpectedVersion) as raised:
        store.append("invoice-42", events(1), expected_version=NO_STREAM)
    assert (raised.value.stream, raised.value.expected, raised.value.actual) == (
        "invoice-42",
        NO_STREAM,
        1,
    )
    with pytest.raises(ValueError, match="stream name"):
        store.append("", events(1))
    assert store.stream_version("invoice-42") == 1


def test_reads_metadata_and_deletes_round_trip(store: SyncStore) -> None:
    assert store.last_position() == 0
    assert store.stream_version("invoice-1") is None
    store.append("invoice-1", events(3))
    store.append("order-1", events(2, "Ordered"))
    store.append("invoice-2", events(1))

    assert [e.version for e in store.read_stream("invoice-1")] == [0, 1, 2]
    assert [e.version for e in store.read_stream("invoice-1", backwards=True, limit=2)] == [2, 1]
    assert [e.data for e in store.read_stream("invoice-1", from_version=2)] == [{"n": 2}]
    assert list(store.read_stream("nothing-here")) == []
    assert [e.position for e in store.read_all()] == [1, 2, 3, 4, 5, 6]
    assert [e.position for e in store.read_all(after=4)] == [5, 6]
    assert [e.position for e in store.read_all(limit=2)] == [1, 2]
    assert [e.stream for e in store.read_all(types=["Ordered"])] == ["order-1", "order-1"]
    assert [e.position for e in store.read_all(category="invoice")] == [1, 2, 3, 6]
    assert store.stream_version("invoice-1") == 2
    assert store.last_position() == 6

    assert store.get_stream_metadata("invoice-1") == StreamMetadata()
    store.set_stream_metadata("invoice-1", StreamMetadata(max_count=1))
    assert store.get_stream_metadata("invoice-1") == StreamMetadata(max_count=1)
    assert [e.version for e in store.read_stream("invoice-1")] == [2]

    store.delete_stream("order-1", expected_version=1)
    assert store.stream_version("order-1") is None
    assert list(store.read_stream("order-1")) == []

    store.tombstone_stream("invoice-2")
    with pytest.raises(StreamDeleted):
        store.stream_version("invoice-2")
    with pytest.raises(StreamDeleted):
        store.append("invoice-2", events(1))
    with pytest.raises(StreamDeleted):
        next(store.read_stream("invoice-2"))
    assert store.last_position() == 6  # nothing is removed from the log


def test_append_many_and_snapshots_round_trip(store: SyncStore) -> None:
    results = store.append_many(
        [eskit.Append("invoice-1", events(2), NO_STREAM), eskit.Append("order-1", events(1))]
    )
    assert [(r.last_version, r.last_position) for r in results] == [(1, 2), (0, 3)]
    with pytest.raises(WrongExpectedVersion):
        store.append_many(
            [eskit.Append("order-2", events(1)), eskit.Append("order-1", events(1), 5)]
        )
    assert store.last_position() == 3

    assert store.load_snapshot("invoice-1", 1) is None
    store.save_snapshot(eskit.Snapshot("invoice-1", 1, 1, {"total": 2}))
    loaded = store.load_snapshot("invoice-1", 1, max_version=1)
    assert loaded is not None
    assert (loaded.version, loaded.state) == (1, {"total": 2})
    with pytest.raises(ValueError):
        store.save_snapshot(eskit.Snapshot("invoice-1", -1, 1, {}))
    store.append("invoice-1", events(2))  # versions 2 and 3
    snapshot, after = store.read_from_snapshot("invoice-1", 1)
    assert snapshot == loaded
    assert [e.version for e in after] == [2, 3]


def test_open_and_close_by_hand_are_idempotent(url: str) -> None:
    before = set(threading.enumerate())
    store = eskit.sync.open_store(url)
    assert not store.is_open
    store.open()
    store.open()
    assert store.is_open
    store.append("invoice-1", events(1))
    store.close()
    store.close()
    assert not store.is_open
    assert set(threading.enumerate()) <= before

    with store:  # reopened on a fresh loop
        assert store.stream_version("invoice-1") == 0
    assert set(threading.enumerate()) <= before


def test_a_store_that_fails_to_open_leaves_no_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    (tmp_path / "a-file").touch()
    store = eskit.sync.open_store(f"sqlite:///{tmp_path / 'a-file' / 'events.db'}")
    with pytest.raises(OSError):  # the directory cannot be created: the async error, as is
        store.open()
    assert not store.is_open
    assert set(threading.enumerate()) <= before


def test_using_a_closed_store_raises_store_closed(url: str) -> None:
    store = eskit.sync.open_store(url)
    with pytest.raises(StoreClosed):
        store.last_position()  # never opened
    with store:
        store.append("invoice-1", events(1))
    with pytest.raises(StoreClosed):
        store.append("invoice-1", events(1))
    with pytest.raises(StoreClosed):
        store.stream_version("invoice-1")
    with pytest.raises(StoreClosed):
        next(store.read_all())
    with pytest.raises(StoreClosed):
        next(store.subscribe())


# -- iterators ------------------------------------------------------------------------------------


def test_a_subscription_receives_events_from_another_thread_live(url: str) -> None:
    before = set(threading.enumerate())
    appended_at: dict[int, float] = {}
    latencies: list[float] = []

    with eskit.sync.open_store(url) as store:
        store.append("invoice-0", events(3))  # caught up first, then live

        def append_slowly() -> None:
            for n in range(1, 6):
                time.sleep(0.05)
                appended_at[3 + n] = time.monotonic()  # its position: 3 events came first
                store.append(f"invoice-{n}", events(1))

        writer = threading.Thread(target=append_slowly)
        writer.start()
        seen = []
        for event in store.subscribe(after=1):
            seen.append(event.position)
            if event.position in appended_at:
                latencies.append(time.monotonic() - appended_at[event.position])
            if event.position == 8:
                break
        writer.join()

        assert seen == [2, 3, 4, 5, 6, 7, 8]
        assert len(latencies) == 5
        assert max(latencies) < 0.1, latencies
    assert set(threading.enumerate()) <= before


def test_closing_the_store_ends_a_waiting_subscription(url: str) -> None:
    store = eskit.sync.open_store(url)
    store.open()
    store.append("invoice-1", events(2))
    seen = []
    closer = threading.Timer(0.2, store.close)
    closer.start()
    for event in store.subscribe():  # ends, as in the async API, when the store closes
        seen.append(event.position)
    closer.join()
    assert seen == [1, 2]
    assert not store.is_open


def test_an_iterator_used_after_close_raises_store_closed(store: SyncStore) -> None:
    store.page_size = 10
    store.append("invoice-1", events(100))
    reading = store.read_all()
    assert next(reading).position == 1
    store.close()
    with pytest.raises(StoreClosed):
        list(reading)


def test_errors_inside_an_iteration_reach_the_caller(store: SyncStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        next(store.read_all(limit=-1))
    with pytest.raises(ValueError, match="category"):
        next(store.subscribe(category=""))


def test_read_all_pages_through_20000_events(url: str) -> None:
    inner = eskit.store.open_store(url)
    inner.page_size = 37
    store = SyncStore(inner)
    assert store.page_size == 37
    with store:
        for batch in range(20):
            store.append(f"invoice-{batch}", events(1000))
        positions = [e.position for e in store.read_all()]
        assert positions == list(range(1, 20_001))
        assert sum(1 for _ in store.read_all(after=19_990)) == 10
        assert sum(1 for _ in store.read_stream("invoice-7", limit=500)) == 500


def test_a_read_fetches_a_page_at_a_time(store: SyncStore) -> None:
    store.page_size = 50
    store.append("invoice-1", events(500))
    fetched: list[int] = []
    read_all_page = store.engine.read_all_page

    def counting(*args: Any) -> Any:
        page = read_all_page(*args)
        fetched.append(len(page[0]))
        return page

    store.engine.read_all_page = counting  # type: ignore[method-assign,assignment]
    reading = store.read_all()
    assert next(reading).position == 1
    assert fetched == [50]  # nothing read ahead of the caller
    reading.close()
    assert sum(1 for _ in store.read_all()) == 500
    assert fetched[1:] == [50] * 10 + [0]  # a full last page: one more look to know


def test_calls_run_in_the_callers_thread_with_no_loop(url: str) -> None:
    """The blocking face starts no event loop and no thread of its own on memory."""
    before = set(threading.enumerate())
    with eskit.sync.open_store(url) as store:
        store.append("invoice-1", events(3))
        assert [e.version for e in store.read_stream("invoice-1")] == [0, 1, 2]
        if url.startswith("memory"):
            assert set(threading.enumerate()) == before
    assert set(threading.enumerate()) <= before


def test_a_readonly_store_is_found_or_not_as_on_the_async_face(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    with pytest.raises(eskit.StoreNotFound, match="no such store"):
        eskit.sync.open_store(url, readonly=True).open()
    assert list(tmp_path.iterdir()) == []
    with eskit.sync.open_store(url) as store:
        store.append("order-1", [NewEvent("Placed", {})])
    with eskit.sync.open_store(url, readonly=True) as store:
        assert store.last_position() == 1
        with pytest.raises(eskit.StoreError, match="read-only"):
            store.append("order-1", [NewEvent("Placed", {})])


def test_arguments_are_checked_as_the_async_store_checks_them(store: SyncStore) -> None:
    """TypeError for a wrong type, ValueError for a wrong value, through the facade too."""
    store.append("invoice-1", events(2))
    with pytest.raises(TypeError, match="backwards"):
        next(store.read_stream("invoice-1", backwards="no"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="types"):
        next(store.read_all(types=[1]))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="types"):
        store.read_page(types="Happened")
    with pytest.raises(TypeError, match="expected_version"):
        store.append("invoice-1", events(1), expected_version="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metadata must be a JSON object"):
        store.append("invoice-1", [NewEvent("A", {}, [])])  # type: ignore[arg-type]
    deep: dict[str, Any] = {}
    for _ in range(10_000):
        deep = {"a": deep}
    with pytest.raises(ValueError, match=r"nested deeper than 100 levels, at data\.a\.a"):
        store.append("invoice-1", [NewEvent("A", deep)])
    assert [e.version for e in store.read_stream("invoice-1")] == [0, 1]


def test_a_store_without_an_engine_has_no_blocking_face() -> None:
    with pytest.raises(TypeError, match="has no engine"):
        SyncStore(EventStore())
