"""Loading an aggregate from PostgreSQL: the snapshot and the page after it in one statement
for a stream without rules, and the same answer as reading them apart, whatever the stream
holds (``postgres_reads.snapshot_and_page``)."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
import eskit.sync
from eskit.store.engine import Engine
from eskit.store.postgres_engine import PostgresEngine
from tests import postgres


@pytest.fixture(scope="module")
def store() -> Iterator[eskit.sync.SyncStore]:
    with eskit.sync.open_store(postgres.store_url()) as opened:
        yield opened


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements run on any connection from now on."""
    seen: list[str] = []
    execute = psycopg.Connection.execute

    def counting(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    return seen


def engine_of(store: eskit.sync.SyncStore) -> PostgresEngine:
    engine = store.engine
    assert isinstance(engine, PostgresEngine)
    return engine


def test_a_stream_without_rules_loads_in_one_statement(
    store: eskit.sync.SyncStore, statements: list[str]
) -> None:
    store.append("invoice-one", [eskit.NewEvent("Added", {"n": n}) for n in range(5)])
    store.save_snapshot(eskit.Snapshot("invoice-one", 2, 1, {"total": 3}))
    statements.clear()
    snapshot, events = engine_of(store).snapshot_and_page("invoice-one", 1, 2**62, 100)
    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (2, {"total": 3})
    assert [e.version for e in events] == [3, 4]
    assert len(statements) == 1


def test_a_stream_with_rules_is_read_by_its_rules(
    store: eskit.sync.SyncStore, statements: list[str]
) -> None:
    store.append("invoice-ruled", [eskit.NewEvent("Added", {"n": n}) for n in range(6)])
    store.save_snapshot(eskit.Snapshot("invoice-ruled", 1, 1, {"total": 2}))
    store.set_stream_metadata("invoice-ruled", eskit.StreamMetadata(truncate_before=3))
    statements.clear()
    snapshot, events = engine_of(store).snapshot_and_page("invoice-ruled", 1, 2**62, 100)
    assert snapshot is None  # it folds in events the rules hide
    assert [e.version for e in events] == [3, 4, 5]
    assert len(statements) > 1


def test_a_tombstoned_stream_refuses_the_load(store: eskit.sync.SyncStore) -> None:
    store.append("invoice-gone", [eskit.NewEvent("Added", {"n": 0})])
    store.tombstone_stream("invoice-gone")
    with pytest.raises(eskit.StreamDeleted):
        engine_of(store).snapshot_and_page("invoice-gone", 1, 2**62, 100)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    events=st.integers(0, 8),
    snapshots=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 2)), max_size=3),
    snapshot_version=st.integers(1, 2),
    max_version=st.integers(-1, 10),
    count=st.integers(1, 10),
    soft_deleted=st.booleans(),
)
def test_one_statement_or_not_the_load_is_the_same_as_reading_apart(
    store: eskit.sync.SyncStore,
    events: int,
    snapshots: list[tuple[int, int]],
    snapshot_version: int,
    max_version: int,
    count: int,
    soft_deleted: bool,
) -> None:
    """Against the engine's generic way: the snapshot, then a page of the stream."""
    stream = f"invoice-{uuid.uuid4().hex}"
    engine = engine_of(store)
    if events:
        store.append(stream, [eskit.NewEvent("Added", {"n": n}) for n in range(events)])
    for version, kind in snapshots:
        store.save_snapshot(eskit.Snapshot(stream, version, kind, {"at": version}))
    if soft_deleted and events:
        store.delete_stream(stream)
    bound = max(max_version, 0) if max_version >= 0 else 2**62
    one = engine.snapshot_and_page(stream, snapshot_version, bound, count)
    apart = Engine.snapshot_and_page(engine, stream, snapshot_version, bound, count)
    assert one == apart


# -- events_after: what the command bus catches a kept state up with -----------------------------


def test_events_after_is_one_statement_whatever_the_stream(
    store: eskit.sync.SyncStore, statements: list[str]
) -> None:
    store.append("account-one", [eskit.NewEvent("Added", {"n": n}) for n in range(3)])
    store.append("account-ruled", [eskit.NewEvent("Added", {"n": 0})])
    store.set_stream_metadata("account-ruled", eskit.StreamMetadata(max_count=5))
    engine = engine_of(store)
    statements.clear()
    assert [e.version for e in engine.events_after("account-one", 0, 10) or []] == [1, 2]
    assert engine.events_after("account-one", 2, 10) == []
    assert engine.events_after("account-never", 0, 10) == []
    assert engine.events_after("account-ruled", 0, 10) is None  # it has a row: load it
    assert len(statements) == 4


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    events=st.integers(0, 6),
    version=st.integers(-1, 7),
    count=st.integers(1, 6),
    row=st.sampled_from([None, "rules", "deleted", "revived"]),
)
def test_events_after_is_the_page_after_the_version_or_none_once_the_stream_has_a_row(
    store: eskit.sync.SyncStore, events: int, version: int, count: int, row: str | None
) -> None:
    """Against a plain read of the stream: the same events when the stream has no row in
    ``eskit_streams`` and at most ``count`` follow, else None (a revived stream keeps its
    row, so it is loaded too)."""
    stream = f"account-{uuid.uuid4().hex}"
    engine = engine_of(store)
    if events:
        store.append(stream, [eskit.NewEvent("Added", {"n": n}) for n in range(events)])
    if row == "rules":
        store.set_stream_metadata(stream, eskit.StreamMetadata())
    elif row in ("deleted", "revived") and events:
        store.delete_stream(stream)
        if row == "revived":
            store.append(stream, [eskit.NewEvent("Added", {"n": events})])
    found = engine.events_after(stream, version, count)
    expected = engine.read_stream_page(stream, version + 1, False, count + 1)
    if (row is not None and (events or row == "rules")) or len(expected) > count:
        assert found is None
    else:
        assert found == expected


def test_events_after_reads_the_primary_not_the_replica() -> None:
    """A command decides on what it reads: never on a replica that may lag. The replica
    here is a database without the store's tables, where any read fails."""
    replica = urllib.parse.quote(postgres.SERVER, safe="")
    with eskit.sync.open_store(f"{postgres.store_url()}&replica={replica}") as store:
        store.append("account-1", [eskit.NewEvent("Added", {"n": n}) for n in range(2)])
        engine = engine_of(store)
        assert [e.version for e in engine.events_after("account-1", 0, 10) or []] == [1]
        with pytest.raises(psycopg.errors.UndefinedTable):  # reads of the log go there
            engine.read_all_page(0, 10, None, None)
