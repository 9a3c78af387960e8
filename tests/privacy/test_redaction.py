"""Redaction: every form a decrypted value takes in a message is replaced, short values and
numbers only as whole words; the registry notes what it decrypted and a forget drops it;
log records hold a redacted stand-in with the traceback; inline projections refuse an
append without quoting the value."""

from __future__ import annotations

import datetime as dt
import logging
import traceback

import pytest

import eskit
from eskit.application import Repository
from eskit.domain import EventRegistry
from eskit.domain.redaction import DECRYPTED, REDACTED, Decrypted, redact
from eskit.privacy import Keyring
from eskit.projections import ReadModelConnection, SQLProjection, add_inline, handles
from eskit.projections.failure import RedactedError, describe, log_failure, scrubbed
from eskit.store.model import RecordedEvent
from tests.privacy import events as examples

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("KeyError: 'Ann Smith'", "Ann Smith", f"KeyError: '{REDACTED}'"),
        (
            "no customer 'ann'; Annual report",
            "Ann Smith",
            f"no customer '{REDACTED}'; Annual report",
        ),
        ("KeyError: 'SMITH'", "Ann Smith", f"KeyError: '{REDACTED}'"),
        ('KeyError: "O\'Brien"', "O'Brien", f'KeyError: "{REDACTED}"'),
        (repr(KeyError("tab\there")), "tab\there", f"KeyError('{REDACTED}')"),
        (repr(repr('it\'s "x"')), 'it\'s "x"', f"'\\'{REDACTED}\\''"),
        ('{"name": "Zo\\u00eb"}', "Zoë", f'{{"name": "{REDACTED}"}}'),
        ("at position 17, found 7", 7, f"at position 17, found {REDACTED}"),
        ("amount 12.5 of 3.75", 12.5, f"amount {REDACTED} of 3.75"),
        ("born datetime.date(1984, 2, 29)", "1984-02-29", f"born {REDACTED}"),
        ("flag True", True, f"flag {REDACTED}"),
        ("list ['Rue 1', 'Paris']", ["Rue 1", "Paris"], f"list ['{REDACTED}', '{REDACTED}']"),
        ("nothing here", "Ann", "nothing here"),
        ("empty '' and None", "", "empty '' and None"),
    ],
)
def test_every_form_of_a_value_is_redacted(text: str, value: object, expected: str) -> None:
    assert redact(text, [value]) == expected


def test_the_memo_is_bounded_and_drops_a_forgotten_subject_values() -> None:
    memo = Decrypted(capacity=2)
    memo.note("e1", [("k1", "Ann")])
    memo.note("e2", [("k2", "Bob")])
    memo.note("e3", [("k1", "Ann Smith")])
    assert memo.values() == ["Ann Smith", "Bob"]  # e1 went first
    memo.drop_keys(["k1"])
    assert memo.values() == ["Bob"]


async def test_decrypting_notes_the_values_and_forgetting_drops_them(
    store: eskit.EventStore, events: EventRegistry, keyring: Keyring
) -> None:
    customers = Repository(store, events, examples.Customer.model())
    await customers.save("c-5", [examples.CustomerRenamed("Zed Five")], eskit.NO_STREAM)
    (stored,) = [e async for e in store.read_stream("customer-c-5")]
    assert "Zed Five" not in DECRYPTED.values()  # encrypted on write: nothing decrypted yet
    events.decode(stored)
    assert "Zed Five" in DECRYPTED.values()
    assert describe(KeyError("Zed Five")) == f"KeyError: '{REDACTED}'"
    keyring.forget("c-5")
    assert "Zed Five" not in DECRYPTED.values()
    assert events.decode(stored)[0].name == "[forgotten]"
    assert "[forgotten]" not in DECRYPTED.values()  # a mask is no secret


def test_a_logged_failure_carries_a_redacted_stand_in_with_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lookup(name: str) -> None:
        try:
            raise LookupError(f"cause {name}")
        except LookupError:
            raise KeyError(name)  # noqa: B904 - a context, as handlers often leave it

    secret = "".join(["Secret", " Value"])  # not in this file's source, which tracebacks quote
    try:
        lookup(secret)
    except KeyError as error:
        with redact_values([secret]):
            log_failure(logging.getLogger("eskit.test"), "it %s", "failed", error=error)
    (record,) = caplog.records
    assert record.exc_info is not None
    stand_in = record.exc_info[1]
    assert isinstance(stand_in, RedactedError)
    formatted = "".join(traceback.format_exception(stand_in))
    assert "Secret" not in formatted + caplog.text
    assert f"KeyError: '{REDACTED}'" in formatted
    assert f"LookupError: cause {REDACTED}" in formatted
    assert "in lookup" in formatted  # where it failed is kept


class redact_values:
    """Put values in the process memo for the block (as decrypting them would)."""

    def __init__(self, values: list[str]) -> None:
        self.values = values

    def __enter__(self) -> None:
        DECRYPTED.note("test-event", [("test-key", value) for value in self.values])

    def __exit__(self, *_: object) -> None:
        DECRYPTED.drop_keys(["test-key"])


def test_a_forgotten_subject_error_keeps_its_type_only() -> None:
    assert scrubbed("KeyError: 'x'") == "KeyError: «redacted»: its data subject was forgotten"
    assert scrubbed("odd text") == "«redacted»: its data subject was forgotten"


class InlineNames(SQLProjection):
    name = "inline_names"
    tables = ("inline_names",)
    schema = ("CREATE TABLE {inline_names} (name TEXT)",)
    registry: EventRegistry

    @handles("CustomerRenamed")
    def renamed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        (renamed,) = self.registry.decode(event)
        raise KeyError(renamed.name)


async def test_an_inline_projection_refuses_an_append_without_the_value(
    store: eskit.EventStore, events: EventRegistry
) -> None:
    projection = InlineNames()
    projection.registry = events
    await add_inline(store, projection)
    customers = Repository(store, events, examples.Customer.model())
    with pytest.raises(eskit.ProjectionError) as refused:
        await customers.save("c-6", [examples.CustomerRenamed("Inline Canary")], eskit.NO_STREAM)
    assert "Inline" not in str(refused.value)
    assert f"KeyError: '{REDACTED}'" in str(refused.value)


def test_dates_and_datetimes_are_recognised() -> None:
    moment = dt.datetime(2024, 5, 6, 7, 8, 9)
    assert redact(repr(moment), [moment.isoformat()]) == REDACTED
