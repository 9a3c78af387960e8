"""The least-privilege application role (``eskit migrate --app-role``): connected as it,
eskit works (appends on both write paths, lifecycle, snapshots, reads, subscriptions, a SQL
projection), and a direct UPDATE, DELETE or TRUNCATE of the events is refused for want of
privilege, even with the guard triggers disabled."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import eskit
from eskit.errors import StoreError
from eskit.projections import ProjectionRunner
from eskit.store.audit import verify
from eskit.store.model import Snapshot, StreamMetadata
from eskit.store.postgres_roles import grant_app_role
from tests import postgres
from tests.cli.conftest import invoke
from tests.projections.test_on_postgres import Totals, totals
from tests.store.test_postgres_one_statement import CountingWriter, open_counting

Role = tuple[str, str]
"""The role's name and the store URL that connects as it."""


def as_role(url: str, role: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def server(url: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(query=""))


def schema_of(url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["schema"]


def drop_role(role: str) -> None:
    with psycopg.connect(postgres.database_url(), autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"'.encode())
        conn.execute(f'DROP ROLE IF EXISTS "{role}"'.encode())


@pytest.fixture
def app() -> Iterator[Role]:
    """A migrated store and a new LOGIN role granted by ``eskit migrate --app-role``
    (trust auth lets it in); the role is dropped at the end."""
    url = postgres.store_url()
    role = f"app_{uuid.uuid4().hex[:12]}"
    try:
        result = invoke(["migrate", url, "--app-role", role, "--login"])
        assert result.exit_code == 0, result.output
        assert f"role {role} created (LOGIN)" in result.output
        yield role, as_role(url, role)
    finally:
        drop_role(role)


def connect_as(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(server(url), autocommit=True)
    conn.execute(f'SET search_path TO "{schema_of(url)}"'.encode())
    return conn


async def test_the_app_role_runs_eskit(app: Role, anyio_backend: str) -> None:
    _, url = app
    CountingWriter.long_way = 0
    async with open_counting(url) as store, eskit.open_store(url) as other:
        await store.append("cart-1", [eskit.NewEvent("Added", {"amount": 2})], eskit.NO_STREAM)
        assert CountingWriter.long_way == 0  # the one-statement path (eskit_append_group)
        await other.append("cart-1", [eskit.NewEvent("Added", {"amount": 3})], 0)
        await store.append("cart-1", [eskit.NewEvent("Added", {"amount": 4})], 1)
        assert CountingWriter.long_way >= 1  # the other moved the stream: the long path
        await store.append("cart-2", [eskit.NewEvent("Added", {"amount": 1})])
        await store.delete_stream("cart-2")
        await store.append("cart-2", [eskit.NewEvent("Added", {"amount": 5})])  # revived
        await store.append("cart-3", [eskit.NewEvent("Added", {"amount": 1})])
        await store.tombstone_stream("cart-3")
        await store.set_stream_metadata("cart-1", StreamMetadata(max_count=10))
        assert (await store.get_stream_metadata("cart-1")).max_count == 10
        for version in range(7):  # past retention: older snapshots are deleted
            await store.save_snapshot(Snapshot("cart-1", version, 1, {"v": version}))
        loaded = await store.load_snapshot("cart-1", 1)
        assert loaded is not None
        assert loaded.state == {"v": 6}
        assert [e.data["amount"] async for e in store.read_stream("cart-1")] == [2, 3, 4]
        assert len([e async for e in store.read_all()]) == 6
        with pytest.raises(eskit.StreamDeleted):
            await store.append("cart-3", [eskit.NewEvent("Added", {"amount": 1})])
        seen: list[int] = []

        async def follow() -> None:
            async for event in store.subscribe(after=0):
                seen.append(event.position)
                if len(seen) == 7:
                    return

        following = asyncio.create_task(follow())
        await other.append("cart-4", [eskit.NewEvent("Added", {"amount": 7})])
        async with asyncio.timeout(10):
            await following
        assert seen == list(range(1, 8))
        async with ProjectionRunner(store, [Totals()]) as runner:
            async with asyncio.timeout(10):
                await runner.wait_until(7)
            assert (await totals(runner.database))["cart-1"] == (3, 9)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE eskit_events SET data = '{}'",
        "DELETE FROM eskit_events",
        "TRUNCATE eskit_events",
        "INSERT INTO eskit_removals VALUES (1, 'cart-1', 0, 'why', 0, 'me')",
        "ALTER TABLE eskit_events DISABLE TRIGGER USER",
        "SET session_replication_role = replica",
    ],
)
def test_the_app_role_has_no_privilege_to_change_the_log(app: Role, statement: str) -> None:
    _, url = app
    asyncio.run(fill(url))
    admin = f"{postgres.database_url()}?schema={schema_of(url)}"
    with connect_as(admin) as owner:  # the guard triggers off: only privileges remain
        owner.execute("ALTER TABLE eskit_events DISABLE TRIGGER USER")
    with connect_as(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement.encode())
    with connect_as(admin) as owner:
        owner.execute("ALTER TABLE eskit_events ENABLE TRIGGER USER")
        assert owner.execute("SELECT count(*) FROM eskit_events").fetchone() == (1,)


async def fill(url: str) -> None:
    async with eskit.open_store(url) as store:
        await store.append("cart-1", [eskit.NewEvent("Added", {"amount": 1})])


def test_an_existing_role_loses_rights_to_change_the_log(anyio_backend: str) -> None:
    url = postgres.store_url()
    role = f"app_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(fill(url))
        with connect_as(url) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN'.encode())
            admin.execute(f'GRANT USAGE ON SCHEMA "{schema_of(url)}" TO "{role}"'.encode())
            admin.execute(f'GRANT ALL ON eskit_events, eskit_removals TO "{role}"'.encode())
        result = invoke(["migrate", url, "--app-role", role])
        assert result.exit_code == 0, result.output
        assert f"role {role} exists" in result.output
        with connect_as(as_role(url, role)) as conn:
            assert conn.execute("SELECT count(*) FROM eskit_events").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM eskit_events")
    finally:
        drop_role(role)


async def test_the_owner_or_a_superuser_is_refused_as_app_role(anyio_backend: str) -> None:
    url = postgres.store_url()
    schema = schema_of(url)
    role = f"own_{uuid.uuid4().hex[:12]}"
    await fill(url)
    try:
        with psycopg.connect(server(url), autocommit=True) as conn:
            with pytest.raises(StoreError, match="superuser"):
                grant_app_role(conn, schema, "postgres")
            conn.execute(f'CREATE ROLE "{role}"'.encode())
            conn.execute(f'ALTER TABLE "{schema}".eskit_events OWNER TO "{role}"'.encode())
            with pytest.raises(StoreError, match="owns the store's tables"):
                grant_app_role(conn, schema, role)
            conn.execute(f'ALTER TABLE "{schema}".eskit_events OWNER TO postgres'.encode())
    finally:
        drop_role(role)


def test_a_new_app_role_is_nologin_by_default(anyio_backend: str) -> None:
    url = postgres.store_url()
    role = f"app_{uuid.uuid4().hex[:12]}"
    try:
        result = invoke(["migrate", url, "--app-role", role])
        assert result.exit_code == 0, result.output
        assert f"role {role} created (NOLOGIN)" in result.output
        with connect_as(url) as admin:
            found = admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
            assert found.fetchone() == (False,)
    finally:
        drop_role(role)


async def test_the_app_role_cannot_migrate_a_schema_that_is_behind(
    app: Role, anyio_backend: str
) -> None:
    """Migrating needs the owner: the app role gets a permission error, and the schema is
    left as it was."""
    _, url = app
    admin = f"{postgres.database_url()}?schema={schema_of(url)}"
    with connect_as(admin) as owner:
        newest = owner.execute("SELECT max(version) FROM eskit_migrations").fetchone()
        owner.execute("DELETE FROM eskit_migrations WHERE version = %s", newest)
        before = owner.execute("SELECT version FROM eskit_migrations ORDER BY 1").fetchall()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with eskit.open_store(url):
            pass
    with connect_as(admin) as owner:
        assert owner.execute("SELECT version FROM eskit_migrations ORDER BY 1").fetchall() == before


def test_migrate_refuses_an_app_role_for_sqlite_or_a_bad_name(tmp_path: Any) -> None:
    result = invoke(["migrate", f"sqlite:///{tmp_path}/e.db", "--app-role", "app"])
    assert result.exit_code == 1
    assert "--app-role is for PostgreSQL stores" in result.output
    result = invoke(["migrate", postgres.store_url(), "--app-role", "App; DROP"])
    assert result.exit_code == 1
    assert "invalid PostgreSQL role" in result.output


async def test_the_app_role_verifies_and_cannot_move_the_chain_start(
    app: Role, anyio_backend: str
) -> None:
    """It reads the chain start record (``eskit verify``) and may not change it."""
    _, url = app
    async with eskit.open_store(url) as store:
        await store.append("cart-1", [eskit.NewEvent("Added", {"amount": 2})])
        report = await verify(store)
    assert report.ok, report.problems
    assert report.chain_start is not None
    assert report.chain_start.position == 1
    for statement in (
        "UPDATE eskit_chain_start SET position = 99",
        "DELETE FROM eskit_chain_start",
        "TRUNCATE eskit_chain_start",
    ):
        with connect_as(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement.encode())
