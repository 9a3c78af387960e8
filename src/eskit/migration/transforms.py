"""Ready-made transforms for ``EventMigration``: upcast every event to today's version,
rename a type or a category, and chain several."""

from __future__ import annotations

import msgspec

from eskit.domain.events import SCHEMA_VERSION, EventRegistry
from eskit.migration.copy_transform import Rewritten, Transform
from eskit.store import rules
from eskit.store.model import RecordedEvent


def upcast(events: EventRegistry) -> Transform:
    """Each event as ``events`` reads it today: old versions through their upcasters
    (renamed, split or dropped as they say), written at the current version
    (``schema_version`` in the metadata). Events already current and types the registry
    does not know are kept as they are. Encrypted fields are copied as stored.

    Raises ``ValueError`` for a registry with a keyring: it would write decrypted fields.
    """
    if events.cipher is not None:
        raise ValueError(
            "upcast(events): the registry has a keyring, and the migration would write"
            " decrypted personal data; give it a registry without one"
        )

    def transform(event: RecordedEvent) -> list[Rewritten]:
        found = events.upcast(event, open=False)
        if found == [event]:
            return [Rewritten.of(event)]
        return [
            Rewritten.of(e, metadata={**e.metadata, SCHEMA_VERSION: events.by_name(e.type).version})
            for e in found
        ]

    return transform


def rename_type(old: str, new: str) -> Transform:
    """Events of type ``old`` become ``new``; the others are kept."""
    rules.check_name(new, "event type")

    def transform(event: RecordedEvent) -> list[Rewritten]:
        return [Rewritten.of(event, type=new) if event.type == old else Rewritten.of(event)]

    return transform


def rename_category(old: str, new: str) -> Transform:
    """Streams of category ``old`` (``old-42``) move to ``new`` (``new-42``)."""
    rules.check_name(new, "category")
    if "-" in old or "-" in new:
        raise ValueError(f"a category holds no '-': {old!r} -> {new!r}")

    def transform(event: RecordedEvent) -> list[Rewritten]:
        if rules.category(event.stream) != old:
            return [Rewritten.of(event)]
        return [Rewritten.of(event, stream=new + event.stream[len(old) :])]

    return transform


def chain(*transforms: Transform) -> Transform:
    """The transforms one after the other: each gets every event the one before wrote."""

    def transform(event: RecordedEvent) -> list[Rewritten]:
        current = [event]
        for step in transforms:
            current = [_as_recorded(e, out) for e in current for out in step(e)]
        return [Rewritten.of(e) for e in current]

    return transform


def _as_recorded(event: RecordedEvent, out: Rewritten) -> RecordedEvent:
    """``event`` rewritten as ``out`` says, for the next transform of a chain (payloads kept
    as bytes go back to ``raw`` and ``raw_metadata``)."""
    data, metadata = out.data, out.metadata
    return msgspec.structs.replace(
        event,
        stream=out.stream,
        type=out.type,
        data=data if isinstance(data, dict) else {},
        raw=None if isinstance(data, dict) else data,
        metadata=metadata if isinstance(metadata, dict) else {},
        raw_metadata=None if isinstance(metadata, dict) else metadata.body,
    )
