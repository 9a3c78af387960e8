"""The canary in an error: handlers that raise with the decrypted value of a sensitive field
(a ``KeyError`` of a name, a ``ValueError`` quoting an e-mail address) get stuck, and the
canary is in none of the places their error goes: the store's tables (the SQLite file and
its write-ahead log, byte for byte; PostgreSQL's rows, as text), the log records (messages
and tracebacks), ``eskit projections status`` and the admin pages. Forgetting the subject
then scrubs the stored errors about its events (even one an older eskit stored unredacted)."""

from __future__ import annotations

import asyncio
import logging
import traceback
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

import eskit
from eskit.application import Repository
from eskit.brokers.nats import NatsPublisher
from eskit.domain import EventRegistry
from eskit.domain.redaction import REDACTED
from eskit.privacy import Keyring, MasterKey, forget, open_keystore
from eskit.projections import (
    PartitionedWorker,
    ProjectionRunner,
    SQLiteDatabase,
    database_for,
)
from eskit.projections import state as st
from eskit.projections.consumers.nats import NatsConsumer
from eskit.projections.failure import FORGOTTEN_ERROR
from eskit.projections.sql import execute
from eskit.web import serving_app
from eskit.web.admin.repair import start_rebuild
from tests import postgres, services
from tests.brokers.fixtures import relay_to_head
from tests.brokers.reading import delete_nats_stream
from tests.cli.conftest import invoke
from tests.privacy import events as examples
from tests.privacy.conftest import drop_schema, files_bytes
from tests.privacy.failing import Mailer, Names, PartitionedNames
from tests.web.api import client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db"
        return
    url = postgres.store_url()
    try:
        yield url
    finally:
        await asyncio.to_thread(drop_schema, url)


def keys_url(store_url: str, tmp_path: Path) -> str:
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/keys.db"
    return store_url.replace("schema=t_", "schema=k_")


async def test_a_handler_error_never_carries_the_canary(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"canary{uuid.uuid4().hex}"
    keys = keys_url(store_url, tmp_path)
    keyring = Keyring(open_keystore(keys), MasterKey.generate())
    events = examples.registry()
    events.encrypt_with(keyring)
    try:
        async with eskit.open_store(store_url) as store:
            customers = Repository(store, events, examples.Customer.model())
            await customers.save(
                "c-1",
                [
                    examples.registered("c-1", f"{canary}@example.com"),
                    examples.CustomerRenamed(canary),
                ],
                eskit.NO_STREAM,
            )
            await stuck_everywhere(store, events)
            stored = await stored_errors(store)
            assert set(stored) == {"names", "mailer", "partitioned_names"}
            assert stored["names"] == f"KeyError: '{REDACTED}'"
            assert stored["partitioned_names"] == f"KeyError: '{REDACTED}'"
            assert stored["mailer"] == f"ValueError: no mailbox for '{REDACTED}'"

            shown = await shown_by_cli_and_admin(store_url)
            assert REDACTED in shown
            assert canary not in shown
            assert canary.encode() not in await stored_text(store_url, tmp_path)
            assert REDACTED in logged(caplog)
            assert canary not in logged(caplog)

            await store_as_an_older_eskit_did(store, "mailer", f"ValueError: {canary}")
            database = database_for(store)
            try:
                await database.write(lambda conn: st.skip(conn, "names", "ticket 9", 0))
                await forget(store, keyring, "c-1", by="dpo")
                (skipped,) = await database.read(lambda conn: st.skips(conn, "names"))
            finally:
                await database.close()
            assert skipped.error == f"KeyError: {FORGOTTEN_ERROR}"
            stored = await stored_errors(store)
            assert stored["mailer"] == f"ValueError: {FORGOTTEN_ERROR}"
            assert stored["partitioned_names"] == f"KeyError: {FORGOTTEN_ERROR}"
    finally:
        keyring.close()


async def stuck_everywhere(store: eskit.EventStore, events: EventRegistry) -> None:
    """Run the three failing projections until each is stuck on its event."""
    runner = ProjectionRunner(store, [Names(events), Mailer(events)], retries=1, backoff=0.01)
    async with runner:
        with pytest.raises(eskit.ProjectionError) as stuck:
            await asyncio.wait_for(runner.wait_until(await store.last_position()), 30)
        assert "«redacted»" in str(stuck.value)
        for _ in range(300):
            if {s.status for s in await runner.status()} == {st.STUCK}:
                break
            await asyncio.sleep(0.05)
    worker = PartitionedWorker(
        store, PartitionedNames(events), partitions=2, retries=1, backoff=0.01
    )
    async with worker:
        for _ in range(300):
            if any(row.stuck for row in await worker.partitions()):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the partition never got stuck")


async def stored_errors(store: eskit.EventStore) -> dict[str, str]:
    """Each stuck projection's (or partition's) error as stored."""
    database = database_for(store)
    try:
        rows = await database.read(
            lambda conn: [
                *conn.execute(
                    "SELECT name, error FROM eskit_projections WHERE error IS NOT NULL"
                ).fetchall(),
                *conn.execute(
                    "SELECT name, error FROM eskit_partitions WHERE error IS NOT NULL"
                ).fetchall(),
            ]
        )
    finally:
        await database.close()
    return {name: error for name, error in rows}


async def store_as_an_older_eskit_did(store: eskit.EventStore, name: str, error: str) -> None:
    """Put an unredacted error in a projection's row, as eskit stored them before."""
    database = database_for(store)
    try:
        await database.write(
            lambda conn: execute(
                conn, "UPDATE eskit_projections SET error = ? WHERE name = ?", (error, name)
            )
        )
    finally:
        await database.close()


async def shown_by_cli_and_admin(store_url: str) -> str:
    """What ``eskit projections status`` prints and what the admin pages show."""
    status = await asyncio.to_thread(invoke, ["projections", "status", store_url])
    assert "stuck" in status.output, status.output
    app = serving_app(eskit.open_store(store_url))
    async with app.router.lifespan_context(app), client(app) as http:
        pages = [
            await http.get(path, headers={"Accept": "text/html"})
            for path in (
                "/admin/projections",
                "/admin/projections/table",
                "/admin/projections/names/skip",
                "/admin/projections/mailer/skip",
                "/admin/projections/partitioned_names/skip",
            )
        ]
    assert all(page.status_code == 200 for page in pages), [p.status_code for p in pages]
    return status.output + "".join(page.text for page in pages)


async def stored_text(store_url: str, tmp_path: Path) -> bytes:
    """The SQLite store's files (and write-ahead log) byte for byte; every row of every
    table in the PostgreSQL store's schema, as text."""
    if store_url.startswith("sqlite"):
        return files_bytes(tmp_path, "events")
    return await asyncio.to_thread(postgres_rows, store_url)


def postgres_rows(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query))["schema"]
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(query=""))) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        assert "eskit_projections" in tables
        texts = [
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
        ]
    return "\n".join(texts).encode()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record as a handler would write it, tracebacks and raw arguments too."""
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.extend(traceback.format_exception(record.exc_info[1]))
            texts.append(repr(record.exc_info[1].args))
    return "\n".join(texts)


async def test_a_broker_consumer_error_never_carries_the_canary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read model fed by NATS: its status and its log say why it fails, redacted."""
    caplog.set_level(logging.DEBUG)
    canary = f"canary{uuid.uuid4().hex}"
    url, prefix = services.nats_url(), services.unique("privacy")
    keyring = Keyring(open_keystore(f"sqlite:///{tmp_path}/keys.db"), MasterKey.generate())
    events = examples.registry()
    events.encrypt_with(keyring)
    try:
        async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
            customers = Repository(store, events, examples.Customer.model())
            await customers.save("c-1", [examples.CustomerRenamed(canary)], eskit.NO_STREAM)
            publisher = NatsPublisher(url, prefix, partitions=1)
            await relay_to_head(store, publisher)
            await publisher.close()
        database = SQLiteDatabase(tmp_path / "read.db")
        consumer = NatsConsumer(url, Names(events), database, prefix=prefix, backoff=0.01)
        async with consumer:
            for _ in range(300):
                errors = [s.error for s in await consumer.status() if s.error]
                if errors:
                    break
                await asyncio.sleep(0.05)
        await database.close()
        assert errors == [f"KeyError: '{REDACTED}'"]
        assert canary not in logged(caplog)
        assert canary.encode() not in files_bytes(tmp_path, "read")
    finally:
        keyring.close()
        await delete_nats_stream(url, prefix)


async def test_a_rebuild_from_the_admin_fails_without_the_canary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The dashboard's rebuild job keeps (and shows) its error redacted, and logs it so."""
    caplog.set_level(logging.DEBUG)
    canary = f"canary{uuid.uuid4().hex}"
    keyring = Keyring(open_keystore(f"sqlite:///{tmp_path}/keys.db"), MasterKey.generate())
    events = examples.registry()
    events.encrypt_with(keyring)
    try:
        async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
            customers = Repository(store, events, examples.Customer.model())
            await customers.save("c-1", [examples.CustomerRenamed(canary)], eskit.NO_STREAM)
            runner = ProjectionRunner(store, [Names(events)])
            job = start_rebuild(runner, {}, "names", "admin")
            assert job.task is not None
            await job.task
            await runner.stop()
        assert job.error == f"KeyError: '{REDACTED}'"
        assert REDACTED in logged(caplog)
        assert canary not in logged(caplog)
    finally:
        keyring.close()
