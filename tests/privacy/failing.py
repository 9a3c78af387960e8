"""Projections whose handlers decrypt and then fail, quoting what they decrypted: the
canary tests run them, and ``eskit projections rebuild --app tests.privacy.failing:projections``
loads them (with the key store and master key of ``ESKIT_KEYS`` and ``ESKIT_MASTER_KEY``)."""

from __future__ import annotations

import os

from eskit.domain import EventRegistry
from eskit.privacy import Keyring, open_keystore
from eskit.projections import Projection, ReadModelConnection, SQLProjection, handles
from eskit.store import EventStore
from eskit.store.model import RecordedEvent
from tests.privacy import events as examples


class Names(SQLProjection):
    """A read model whose handler looks a name up and fails with it (SQL, one transaction)."""

    name = "names"
    tables = ("names",)
    schema = ("CREATE TABLE {names} (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL)",)

    def __init__(self, events: EventRegistry) -> None:
        self.registry = events

    @handles("CustomerRenamed")
    def renamed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        (renamed,) = self.registry.decode(event)
        raise KeyError(renamed.name)


class PartitionedNames(Names):
    """The same, run by partitioned workers."""

    name = "partitioned_names"
    tables = ("partitioned_names",)
    schema = (
        "CREATE TABLE {partitioned_names} (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL)",
    )


class Mailer(Projection):
    """Not a SQL read model: its handler quotes the e-mail address it cannot deliver to."""

    name = "mailer"

    def __init__(self, events: EventRegistry) -> None:
        self.registry = events

    @handles("CustomerRegistered")
    def registered(self, event: RecordedEvent) -> None:
        (registered,) = self.registry.decode(event)
        try:
            raise LookupError(registered.email)
        except LookupError as cause:
            raise ValueError(f"no mailbox for {registered.email!r}") from cause


def projections(store: EventStore) -> list[SQLProjection]:
    """``Names``, decrypting with the keys the environment names."""
    events = examples.registry()
    events.encrypt_with(Keyring.from_env(open_keystore(os.environ["ESKIT_KEYS"])))
    return [Names(events)]
