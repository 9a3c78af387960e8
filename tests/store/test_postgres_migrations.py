"""The PostgreSQL store's versioned migrations: each version applied once, in order, in one
transaction; processes migrating at once take turns; bad schema names never reach SQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import anyio
import psycopg
import pytest

import eskit
from eskit.store import postgres_schema
from eskit.store.migrations import newest
from eskit.store.postgres_schema import Migration, check_schema, migrate, migrations
from tests.postgres import database_url

pytestmark = pytest.mark.anyio
Connection = psycopg.Connection[tuple[object, ...]]


def new_schema() -> str:
    return f"m_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def conn() -> Iterator[Connection]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        yield conn


def recorded(conn: Connection, schema: str) -> list[tuple[object, ...]]:
    """The (version, name) rows of the schema's eskit_migrations table."""
    cursor = conn.execute(f'SELECT version, name FROM "{schema}".eskit_migrations')
    return sorted(cursor.fetchall())


def schema_exists(conn: Connection, schema: str) -> bool:
    cursor = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cursor.fetchone() is not None


def table_exists(conn: Connection, schema: str, table: str) -> bool:
    cursor = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',))
    row = cursor.fetchone()
    return row is not None and row[0] is not None


def every_version() -> list[tuple[object, ...]]:
    return [(m.version, m.name) for m in migrations()]


class MigrationLock:
    """The advisory lock ``migrate`` takes for a schema, held by the test, to make
    migrations wait for it: two of them then really race for the lock once it is freed."""

    def __init__(self, conn: Connection, schema: str) -> None:
        self.conn = conn
        self.key = postgres_schema._lock_key(schema)

    def take(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))

    def free(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    def waiting(self) -> int:
        """How many sessions wait for the lock (a bigint key shows as two 32-bit oids)."""
        cursor = self.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s AND objid = %s AND objsubid = 1",
            (self.key >> 32, self.key & 0xFFFFFFFF),
        )
        row = cursor.fetchone()
        assert row is not None
        count = row[0]
        assert isinstance(count, int)
        return count

    async def wait_for(self, count: int, alive: Callable[[], bool]) -> None:
        """Poll until ``count`` sessions wait for the lock (bound it with a timeout)."""
        while self.waiting() < count:
            assert alive(), "a migration ended before waiting for the lock"
            await anyio.sleep(0.01)


async def test_each_version_is_applied_once(conn: Connection) -> None:
    schema = new_schema()
    first = migrate(conn, schema)
    second = migrate(conn, schema)

    assert first == migrations()
    assert second == []
    assert recorded(conn, schema) == every_version()
    for table in ("eskit_head", "eskit_events", "eskit_streams", "eskit_snapshots"):
        assert table_exists(conn, schema, table)


def test_versions_count_from_one_without_gaps() -> None:
    found = migrations()
    versions = [m.version for m in found]
    assert versions == sorted(set(versions))
    assert versions == list(range(1, newest(found) + 1))
    assert found[0].name == "event_store"
    assert all(m.sql.strip() for m in found)


async def test_racing_migrations_take_turns(conn: Connection) -> None:
    """Two sessions released onto the same unmigrated schema at once: both succeed, one
    applies every version and the other finds nothing left to do."""
    schema = new_schema()
    lock = MigrationLock(conn, schema)
    results: list[list[Migration]] = []

    def migrate_own() -> None:
        with psycopg.connect(database_url(), autocommit=True) as own:
            results.append(migrate(own, schema))

    async def racer() -> None:
        await anyio.to_thread.run_sync(migrate_own)

    lock.take()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(racer)
        tasks.start_soon(racer)
        try:
            with anyio.fail_after(10):
                await lock.wait_for(2, alive=lambda: not results)
        finally:
            lock.free()

    assert sorted(results, key=len) == [[], migrations()]
    assert recorded(conn, schema) == every_version()


async def test_a_failing_migration_changes_nothing(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All pending versions run in one transaction: a failure in the last one undoes the
    ones before it, and even the creation of the schema."""
    shipped = migrations()
    broken = Migration(newest(shipped) + 1, "broken", "CREATE TABLE extra (a INTEGER); SELECT 1/0;")
    monkeypatch.setattr(postgres_schema, "migrations", lambda: [*shipped, broken])
    schema = new_schema()

    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(conn, schema)
    assert not schema_exists(conn, schema)

    monkeypatch.setattr(postgres_schema, "migrations", lambda: shipped)
    migrate(conn, schema)
    monkeypatch.setattr(postgres_schema, "migrations", lambda: [*shipped, broken])
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(conn, schema)
    assert recorded(conn, schema) == every_version()
    assert not table_exists(conn, schema, "extra")


async def test_a_new_version_is_applied_to_a_migrated_schema(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = new_schema()
    migrate(conn, schema)
    shipped = migrations()
    later = Migration(newest(shipped) + 1, "later", "CREATE TABLE later (a INTEGER);")
    monkeypatch.setattr(postgres_schema, "migrations", lambda: [*shipped, later])

    assert migrate(conn, schema) == [later]
    assert migrate(conn, schema) == []
    assert table_exists(conn, schema, "later")


BAD_SCHEMAS = ["", "Public", "1st", 'a"b', "a; DROP TABLE x", "a-b", "é", "x" * 64, None, 7]


@pytest.mark.parametrize("schema", BAD_SCHEMAS, ids=repr)
def test_bad_schema_names_are_refused(schema: object) -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema"):
        check_schema(schema)
    if isinstance(schema, str) and schema:
        query = f"schema={schema}"
        with pytest.raises(ValueError, match="invalid PostgreSQL schema"):
            eskit.open_store(f"postgresql://postgres@127.0.0.1/test?{query}")


@pytest.mark.parametrize("schema", ['a"b', "a; DROP TABLE x", "Public"], ids=repr)
async def test_migrate_refuses_a_bad_schema_before_any_sql(conn: Connection, schema: str) -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema"):
        migrate(conn, schema)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_a_store_opens_on_a_migrated_schema_without_migrating(conn: Connection) -> None:
    schema = new_schema()
    migrate(conn, schema)
    url = f"{database_url()}?schema={schema}"
    async with eskit.open_store(url, migrate_on_open=False) as store:
        await store.append("a-1", [eskit.NewEvent("E", {"n": 1})])
        assert await store.last_position() == 1
    assert recorded(conn, schema) == every_version()


async def test_a_store_that_does_not_migrate_refuses_an_unmigrated_schema_clearly() -> None:
    store = eskit.store.PostgresStore(database_url(), schema=new_schema(), migrate_on_open=False)
    with pytest.raises(eskit.StoreError, match=r"has no eskit tables.*eskit migrate"):
        await store.open()
    assert not store.is_open


async def test_a_store_that_does_not_migrate_opens_a_migrated_schema(conn: Connection) -> None:
    schema = new_schema()
    migrate(conn, schema)
    async with eskit.store.PostgresStore(
        database_url(), schema=schema, migrate_on_open=False
    ) as store:
        assert await store.last_position() == 0


async def test_a_schema_newer_than_the_code_is_refused(conn: Connection) -> None:
    schema = new_schema()
    migrate(conn, schema)
    conn.execute(
        f'INSERT INTO "{schema}".eskit_migrations (version, name) VALUES (999, %s)', ("future",)
    )
    with pytest.raises(eskit.StoreError, match="newer than this eskit knows"):
        migrate(conn, schema)


# -- readonly=True: inspect an existing schema, never create or migrate one ------------------


async def test_a_readonly_open_of_a_missing_schema_is_not_found_and_creates_nothing(
    conn: Connection,
) -> None:
    schema = new_schema()
    store = eskit.open_store(f"{database_url()}?schema={schema}", readonly=True)
    with pytest.raises(eskit.StoreNotFound, match=rf"no such store: PostgreSQL schema {schema}"):
        await store.open()
    assert not store.is_open
    assert not schema_exists(conn, schema)


async def test_a_readonly_open_of_a_schema_without_eskit_tables_creates_none(
    conn: Connection,
) -> None:
    schema = new_schema()
    conn.execute(f'CREATE SCHEMA "{schema}"')
    with pytest.raises(eskit.StoreNotFound, match=r"has no eskit tables.*eskit migrate"):
        await eskit.open_store(f"{database_url()}?schema={schema}", readonly=True).open()
    assert not table_exists(conn, schema, "eskit_migrations")
    assert not table_exists(conn, schema, "events")


async def test_a_readonly_open_does_not_migrate_an_older_schema(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = new_schema()
    migrate(conn, schema)
    shipped = migrations()
    later = Migration(newest(shipped) + 1, "later", "CREATE TABLE later (a INTEGER);")
    monkeypatch.setattr(postgres_schema, "migrations", lambda: [*shipped, later])
    with pytest.raises(eskit.StoreError, match=r"is at version \d+.*eskit migrate"):
        await eskit.open_store(f"{database_url()}?schema={schema}", readonly=True).open()
    assert not table_exists(conn, schema, "later")


async def test_a_readonly_store_reads_a_schema_and_runs_no_writer(conn: Connection) -> None:
    url = f"{database_url()}?schema={new_schema()}"
    async with eskit.open_store(url) as store:
        await store.append("a-1", [eskit.NewEvent("E", {"n": 1})])
    async with eskit.open_store(url, readonly=True) as store:
        assert isinstance(store, eskit.store.PostgresStore)
        assert store.engine._group is None
        assert [e.data async for e in store.read_stream("a-1")] == [{"n": 1}]
        with pytest.raises(eskit.StoreError, match="read-only"):
            await store.append("a-1", [eskit.NewEvent("E", {"n": 2})])
        assert await store.last_position() == 1
