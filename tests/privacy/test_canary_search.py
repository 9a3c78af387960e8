"""The canary in a search index: a unique value written into sensitive fields is found by
a ``SearchIndex`` built from the decrypted events, and after ``forget`` it is gone from the
index — from its answers, from the SQLite file byte for byte, from a PostgreSQL dump — and
a rebuild does not bring it back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.privacy import FORGOTTEN, Keyring, MasterKey, forget, open_keystore
from eskit.projections import ProjectionRunner, ReadModelConnection, handles
from eskit.projections.search import Field, SearchIndex
from eskit.store.model import RecordedEvent
from tests import postgres
from tests.privacy.conftest import drop_schema
from tests.privacy.test_canary import files_bytes, pg_dump, registry_with, write_with_canary

pytestmark = pytest.mark.anyio


class CustomerSearch(SearchIndex):
    """Customers by id: their e-mail, name and address are personal, their country not."""

    name = "customer_search"
    fields = (
        Field("name", weight=4, personal=True),
        Field("email", weight=2, personal=True),
        Field("address", weight=1, personal=True),
        Field("country", weight=1),
    )

    @handles("CustomerRegistered")
    def registered(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        customer = str(event.data["customer_id"])
        email, country = str(event.data["email"]), str(event.data["country"])
        self.put(db, customer, subject=customer, email=email, country=country)

    @handles("CustomerRenamed")
    def renamed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.update(db, event.stream.removeprefix("customer-"), name=str(event.data["name"]))

    @handles("CustomerMoved")
    def moved(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        address = str(event.data["address"] or "")
        self.update(db, str(event.data["customer_id"]), address=address)


@pytest.fixture(params=["sqlite", "postgres"])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The store's URL and its key store's: files, or two schemas (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"
        return
    store_url = postgres.store_url()
    keys_url = store_url.replace("schema=t_", "schema=k_")
    try:
        yield store_url, keys_url
    finally:
        await asyncio.to_thread(drop_schema, store_url)
        await asyncio.to_thread(drop_schema, keys_url)


async def stored(store_url: str, tmp_path: Path, wal: bool = False) -> bytes:
    """What the store's database holds: its files, or a dump of its schema."""
    if store_url.startswith("sqlite"):
        return files_bytes(tmp_path, wal=wal)
    return await asyncio.to_thread(pg_dump, store_url)


async def test_a_forgotten_subject_leaves_the_search_index(
    urls: tuple[str, str], tmp_path: Path
) -> None:
    store_url, keys_url = urls
    canary = uuid.uuid4().hex  # one word, as the index splits text into words
    keyring = Keyring(open_keystore(keys_url), MasterKey.generate())
    events = registry_with(keyring)
    index = CustomerSearch()
    index.events = events  # type: ignore[misc]  # handlers see the decrypted fields
    try:
        async with eskit.open_store(store_url) as store:
            await write_with_canary(store, events, f"canary {canary}")
            async with ProjectionRunner(store, [index]) as runner:
                await runner.run_until_caught_up()
                (hit,) = await CustomerSearch.search(runner.database, canary)
                assert (hit.key, hit.fields["country"]) == ("c-1", "NL")
                assert canary.encode() in await stored(store_url, tmp_path, wal=True)

                await forget(store, keyring, "c-1", by="dpo")
                await runner.run_until_caught_up()

                assert await CustomerSearch.search(runner.database, canary) == []
                everyone = await CustomerSearch.search(runner.database, "", where={"country": "NL"})
                assert [h.key for h in everyone] == ["c-1", "c-2"]
                assert everyone[0].fields == {
                    "name": FORGOTTEN,
                    "email": FORGOTTEN,
                    "address": FORGOTTEN,
                    "country": "NL",
                }
                assert [h.key for h in await CustomerSearch.search(runner.database, "other")] == [
                    "c-2"
                ]
        assert canary.encode() not in await stored(store_url, tmp_path)  # the log written back

        async with eskit.open_store(store_url) as store, ProjectionRunner(store, [index]) as runner:
            await runner.rebuild(CustomerSearch.name)  # from the events, which read as masks
            assert await CustomerSearch.search(runner.database, canary) == []
    finally:
        keyring.close()
