"""The canary in a consumer group: a handler that fails quoting a decrypted value, and a
nack whose reason quotes one, leave no plaintext in the parked reasons or the store's file;
forgetting the subject scrubs the reasons about its events."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import eskit
from eskit.application import Repository
from eskit.domain import EventRegistry
from eskit.domain.redaction import REDACTED
from eskit.privacy import Keyring, forget
from eskit.projections.failure import FORGOTTEN_ERROR
from eskit.subscriptions import Groups, Settings, Source
from tests.privacy import events as examples
from tests.privacy.conftest import files_bytes

pytestmark = pytest.mark.anyio


async def test_parked_reasons_never_carry_the_canary(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring, tmp_path: Path
) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    await Repository(store, events, examples.Customer.model()).save(
        "c-1",
        [examples.registered("c-1", f"{canary}@example.com"), examples.CustomerRenamed(canary)],
        eskit.NO_STREAM,
    )
    groups = Groups(store)
    await groups.create("mail", Source.all(), settings=Settings(max_retries=0))
    await groups.create("greet", Source.all())

    def handler(event: eskit.RecordedEvent) -> None:
        (decoded,) = events.decode(event)
        if isinstance(decoded, examples.CustomerRegistered):
            raise ValueError(f"no mailbox for {decoded.email!r}")
        raise KeyError(decoded.name)

    await groups.consumer("mail", "a").run(handler, until_idle=True)
    assert [p.reason for p in await groups.parked("mail")] == [
        f"ValueError: no mailbox for '{REDACTED}'",
        f"KeyError: '{REDACTED}'",
    ]
    _, renamed = await groups.consumer("greet").fetch()
    (decoded,) = events.decode(renamed.event)
    await renamed.nack("park", f"cannot greet {decoded.name}")
    assert [p.reason for p in await groups.parked("greet")] == [f"cannot greet {REDACTED}"]
    assert canary.encode() not in files_bytes(tmp_path, "events.db")
    await forget(store, keyring, "c-1", by="dpo")  # the subject's reasons: scrubbed too
    assert [p.reason for p in await groups.parked("mail")] == [
        f"ValueError: {FORGOTTEN_ERROR}",
        f"KeyError: {FORGOTTEN_ERROR}",
    ]
