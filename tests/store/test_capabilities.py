"""What a backend offers beyond the contract, asked of the store (never by checking its type):
the database its projections use (``read_model_database``) and its schema migration
(``migrate``). Nothing outside ``open_store`` picks a backend with ``isinstance``."""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.projections import SQLiteDatabase, StoreDatabase, database_for
from eskit.store import postgres_schema, sqlite_schema
from eskit.store.base import EventStore
from eskit.store.memory import MemoryStore
from tests import postgres

pytestmark = pytest.mark.anyio

SRC = Path(eskit.__file__).parent
BACKENDS = ("memory", "sqlite", "postgres")


def url_of(backend: str, tmp_path: Path) -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path}/events.db",
        "postgres": postgres.store_url(),
    }[backend]


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[EventStore]:
    async with eskit.open_store(url_of(request.param, tmp_path)) as opened:
        yield opened


# -- read_model_database ----------------------------------------------------------------------


async def test_the_read_model_database_holds_the_log_where_the_store_has_a_database(
    store: EventStore,
) -> None:
    """SQLite and PostgreSQL offer their own database, where a batch reads the log in the
    transaction that applies it; memory a private in-memory SQLite database, apart."""
    written = await store.append("order-1", [eskit.NewEvent("Placed", {"n": 1})])
    database = store.read_model_database()
    assert database is not None
    assert store.read_models_in_sqlite == isinstance(database, SQLiteDatabase | StoreDatabase)
    try:
        page = await database.read(lambda conn: database.page_in(conn, 0, 10, None))
        if isinstance(store, MemoryStore):
            assert (database.holds_log, page) == (False, None)
            assert isinstance(database, SQLiteDatabase)
        else:
            assert database.holds_log
            assert page is not None
            assert [e.position for e in page.events] == [written.last_position]
    finally:
        await database.close()


async def test_a_store_that_offers_no_database_is_told_to_give_one(anyio_backend: str) -> None:
    class Bare(MemoryStore):
        def read_model_database(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(ValueError, match="projections over a Bare need a database"):
        database_for(Bare())


# -- migrate ----------------------------------------------------------------------------------


async def test_memory_has_nothing_to_migrate_and_no_roles(anyio_backend: str) -> None:
    store = eskit.open_store("memory://")
    assert await store.migrate() is None
    assert not store.grants_roles
    with pytest.raises(ValueError, match="app_role is for PostgreSQL stores"):
        await store.migrate("app")


async def test_sqlite_migrates_its_file_once_without_opening(
    tmp_path: Path, anyio_backend: str
) -> None:
    path = tmp_path / "events.db"
    store = eskit.open_store(f"sqlite:///{path}")
    first = await store.migrate()
    again = await store.migrate()
    newest = sqlite_schema.migrations()[-1].version
    assert first is not None
    assert again is not None
    assert first.where == again.where == str(path)
    assert [(v, n) for v, n, _ in first.applied] == [
        (m.version, m.name) for m in sqlite_schema.migrations()
    ]
    assert {at for _, _, at in first.applied} == {None}  # a SQLite file records no time
    assert (first.version, again.version, again.applied) == (newest, newest, [])
    assert not store.is_open


async def test_sqlite_refuses_a_role_before_creating_anything(
    tmp_path: Path, anyio_backend: str
) -> None:
    path = tmp_path / "events.db"
    store = eskit.open_store(f"sqlite:///{path}")
    with pytest.raises(ValueError, match="app_role is for PostgreSQL stores"):
        await store.migrate("app")
    assert not path.exists()


async def test_postgres_migrates_its_schema_once_and_says_when(anyio_backend: str) -> None:
    store = eskit.open_store(postgres.store_url())
    assert store.grants_roles
    before = dt.datetime.now(dt.UTC)
    first = await store.migrate()
    again = await store.migrate()
    shipped = postgres_schema.migrations()
    assert first is not None
    assert again is not None
    assert first.where == again.where == f"schema {store.schema}"  # type: ignore[attr-defined]
    assert [(v, n) for v, n, _ in first.applied] == [(m.version, m.name) for m in shipped]
    assert all(at is not None and at >= before for _, _, at in first.applied)
    assert (first.version, again.version, again.applied) == (shipped[-1].version,) * 2 + ([],)
    assert not store.is_open
    async with store:  # the migrated schema opens as it is
        await store.append("order-1", [eskit.NewEvent("Placed", {})])


# -- the seam ---------------------------------------------------------------------------------


def test_no_module_picks_a_backend_by_its_type() -> None:
    """``open_store`` is the one place that knows the backends apart; everything else asks
    the store what it can do."""
    backends = {"MemoryStore", "SQLiteStore", "PostgresStore"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "store" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"isinstance", "issubclass"}
                and backends & _names(node)
            ):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def _names(node: ast.AST) -> set[str]:
    """The names and attributes ``node`` mentions."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }
