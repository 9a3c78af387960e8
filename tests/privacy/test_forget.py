"""Forgetting a subject: its key is deleted and the forget recorded; aggregates still load,
with typed masks in place of its data; projections anonymise live and rebuild without error;
upcasters see the decrypted (or masked) fields of old versions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import pytest

import eskit
from eskit.application import CommandBus, Repository
from eskit.domain import EventRegistry
from eskit.privacy import (
    FORGOTTEN,
    FORGOTTEN_STREAM,
    Keyring,
    MemoryKeyStore,
    Sensitive,
    StoredKey,
    SubjectForgotten,
    forget,
)
from eskit.projections import (
    Projection,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    handles,
)
from tests.privacy import events as examples

pytestmark = pytest.mark.anyio


async def write_two_customers(store: eskit.EventStore, events: EventRegistry) -> None:
    customers = Repository(store, events, examples.Customer.model())
    for customer_id, name in (("c-1", "Ann"), ("c-2", "Bob")):
        await customers.save(
            customer_id,
            [
                examples.registered(customer_id, f"{name.lower()}@example.com"),
                examples.CustomerRenamed(name),
                examples.CustomerMoved(customer_id=customer_id, address=f"{name} St 1", floor=3),
            ],
            eskit.NO_STREAM,
        )


async def test_a_forgotten_subject_reads_as_typed_masks(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    await write_two_customers(store, events)
    await forget(store, keyring, "c-1", by="dpo@example.com", reason="erasure request 42")

    stored = [e async for e in store.read_stream("customer-c-1")]
    assert [e for r in stored for e in events.decode(r)] == [
        examples.CustomerRegistered("c-1", FORGOTTEN, dt.date(1900, 1, 1), "NL"),
        examples.CustomerRenamed(FORGOTTEN),
        examples.CustomerMoved(customer_id="c-1", address=None, floor=3),
    ]
    customers = Repository(store, events, examples.Customer.model())
    ann, bob = (await customers.load("c-1")).state, (await customers.load("c-2")).state
    assert (ann.email, ann.name, ann.address) == (FORGOTTEN, FORGOTTEN, None)
    assert (bob.email, bob.name, bob.address) == ("bob@example.com", "Bob", "Bob St 1")


async def test_the_forget_is_recorded_without_personal_data(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    await write_two_customers(store, events)
    key_id = keyring.key_for("c-1")[0]
    result = await forget(store, keyring, "c-1", by="dpo@example.com", reason="request 42")

    (record,) = [e async for e in store.read_stream(FORGOTTEN_STREAM)]
    assert record.position == result.last_position
    assert record.type == "SubjectForgotten"
    assert record.data == {
        "subject": "c-1",
        "key_ids": [key_id],
        "by": "dpo@example.com",
        "reason": "request 42",
    }
    assert record.metadata == {"by": "dpo@example.com"}
    events.register("SubjectForgotten")(SubjectForgotten)
    assert events.decode(record) == [
        SubjectForgotten("c-1", [key_id], "dpo@example.com", "request 42")
    ]


async def test_forget_refuses_an_empty_subject_or_author(
    store: eskit.EventStore, keyring: Keyring
) -> None:
    with pytest.raises(ValueError, match=r"the subject to forget must be a non-empty string"):
        await forget(store, keyring, " ", by="dpo")
    with pytest.raises(ValueError, match=r"say who asked to forget"):
        await forget(store, keyring, "c-1", by="")
    assert await store.last_position() == 0


@dataclasses.dataclass(frozen=True)
class Rename:
    customer_id: str
    name: str


async def test_commands_still_run_and_new_data_gets_a_new_key(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Rename,
        examples.Customer,
        aggregate_id=lambda c: c.customer_id,
        handle=lambda c, customer: customer.record(examples.CustomerRenamed(c.name)),
    )
    await bus.send(Rename("c-1", "Ann"))
    await forget(store, keyring, "c-1", by="dpo")
    result = await bus.send(Rename("c-1", "Ann Again"))
    assert result.version == 1

    names = [
        e.name
        for r in [x async for x in store.read_stream("customer-c-1")]
        for e in events.decode(r)
    ]
    assert names == [FORGOTTEN, "Ann Again"]
    loaded = await bus.repository(examples.Customer.model()).load("c-1")
    assert loaded.state.name == "Ann Again"


class CustomerList(SQLProjection):
    """A read model holding personal data: anonymised when its subject is forgotten."""

    name = "customer_list"
    tables = ("customer_list",)
    schema = ("CREATE TABLE {customer_list} (customer_id TEXT PRIMARY KEY, email TEXT, name TEXT)",)

    @handles("CustomerRegistered")
    def registered(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            "INSERT INTO {customer_list} VALUES (?, ?, '')",
            (event.data["customer_id"], event.data["email"]),
        )

    @handles("CustomerRenamed")
    def renamed(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            "UPDATE {customer_list} SET name = ? WHERE customer_id = ?",
            (event.data["name"], event.stream.split("-", 1)[1]),
        )

    @handles("SubjectForgotten")
    def forgotten(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            "UPDATE {customer_list} SET email = ?, name = ? WHERE customer_id = ?",
            (FORGOTTEN, FORGOTTEN, event.data["subject"]),
        )


async def rows(runner: ProjectionRunner) -> list[tuple[Any, ...]]:
    return await runner.database.read(
        lambda c: c.execute("SELECT * FROM customer_list ORDER BY customer_id").fetchall()
    )


async def test_projections_anonymise_and_rebuild_after_a_forget(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    projection = CustomerList()
    projection.events = events  # type: ignore[misc]  # decrypts what the handlers see
    await write_two_customers(store, events)
    async with ProjectionRunner(store, [projection]) as runner:
        await runner.run_until_caught_up()
        assert await rows(runner) == [
            ("c-1", "ann@example.com", "Ann"),
            ("c-2", "bob@example.com", "Bob"),
        ]
        result = await forget(store, keyring, "c-1", by="dpo")
        await runner.wait_until(result.last_position)
        anonymised = [("c-1", FORGOTTEN, FORGOTTEN), ("c-2", "bob@example.com", "Bob")]
        assert await rows(runner) == anonymised

        await runner.rebuild("customer_list")
        assert await rows(runner) == anonymised
        assert (await runner.status())[0].status == "running"


class Emails(Projection):
    """Collects what its handler is given."""

    name = "emails"

    def __init__(self) -> None:
        self.seen: list[object] = []

    @handles("CustomerRegistered")
    def registered(self, event: eskit.RecordedEvent) -> None:
        self.seen.append(event.data["email"])


class DecryptedEmails(Emails):
    name = "decrypted_emails"


async def test_without_the_registry_a_projection_sees_only_ciphertext(
    store: eskit.EventStore, events: EventRegistry
) -> None:
    await write_two_customers(store, events)
    plain, decrypting = Emails(), DecryptedEmails()
    decrypting.events = events  # type: ignore[misc]
    runner = ProjectionRunner(store, [plain, decrypting])
    try:
        await runner.run_until_caught_up()
    finally:
        await runner.stop()
    assert decrypting.seen == ["ann@example.com", "bob@example.com"]
    assert plain.seen == [tag for tag in plain.seen if isinstance(tag, dict) and "$enc" in tag]
    assert len(plain.seen) == 2


@dataclasses.dataclass(frozen=True)
class RenamedV1:
    full_name: Annotated[str, Sensitive()]


async def test_old_versions_are_decrypted_before_upcasting(
    store: eskit.EventStore, keyring: Keyring
) -> None:
    old = EventRegistry()
    old.register("CustomerRenamed")(RenamedV1)
    old.encrypt_with(keyring)
    customers = Repository(store, old, examples.Customer.model())
    for customer_id in ("c-1", "c-2"):
        await customers.save(customer_id, [RenamedV1(f"{customer_id} name")], eskit.NO_STREAM)
    keyring.forget("c-2")

    current = EventRegistry()
    current.register("CustomerRenamed", version=2)(examples.CustomerRenamed)
    current.upcasters.register("CustomerRenamed", from_version=1)(
        lambda data: {"name": data.pop("full_name")}
    )
    current.encrypt_with(keyring)
    decoded = [e for r in [x async for x in store.read_all()] for e in current.decode(r)]
    assert decoded == [examples.CustomerRenamed("c-1 name"), examples.CustomerRenamed(FORGOTTEN)]


class DownKeyStore(MemoryKeyStore):
    """A key store that cannot be reached."""

    def get(self, key_id: str) -> StoredKey | None:
        raise eskit.StoreUnavailable("the key store is down")


async def test_an_unreachable_key_store_raises_instead_of_masking(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    await write_two_customers(store, events)
    events.encrypt_with(Keyring(DownKeyStore(), keyring.master))
    with pytest.raises(eskit.StoreUnavailable, match="the key store is down"):
        await Repository(store, events, examples.Customer.model()).load("c-1")
