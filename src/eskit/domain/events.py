"""Typed events: a registry of stable type names and schema versions, and the codec.

An event class is registered under a name and a version that are stored with each event,
never under its module path, so classes can move and be renamed freely. Old versions are
brought up to date at read time by upcasters (``eskit.domain.upcasting``); stored events are
never rewritten. Fields marked ``Sensitive`` (``eskit.domain.sensitive``) are stored
encrypted by the cipher given to ``encrypt_with`` and decrypted before anything else.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import msgspec

from eskit.domain.redaction import DECRYPTED
from eskit.domain.sensitive import (
    FORGOTTEN,
    SEALED,
    FieldCipher,
    SensitiveField,
    holds_sealed,
    sensitive_fields,
    subject_of,
)
from eskit.domain.upcasting import Upcasters
from eskit.errors import PrivacyError, UnknownEventType, UnsupportedEventVersion
from eskit.store import rules
from eskit.store.model import JSONObject, RecordedEvent

E = TypeVar("E")

SCHEMA_VERSION: Final = "schema_version"
"""The metadata key holding the schema version an event was written with (1 if absent)."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventType:
    """How one event class is stored: its name, schema version and codec."""

    name: str
    version: int
    cls: type[Any]
    encode: Callable[[Any], JSONObject]
    decode: Callable[[JSONObject], Any]
    sensitive: tuple[SensitiveField, ...] = ()
    """Fields stored encrypted (``eskit.domain.sensitive``)."""


class EventRegistry:
    """Event classes by stable name and version, and the upcasters for their old versions.

    Register dataclasses, msgspec Structs or pydantic models::

        events = EventRegistry()

        @events.register("InvoiceCreated", version=2)
        @dataclass(frozen=True)
        class InvoiceCreated:
            invoice_id: str
            currency: str
    """

    def __init__(self) -> None:
        self._by_class: dict[type[Any], EventType] = {}
        self._by_name: dict[str, EventType] = {}
        self._masks: dict[str, dict[str, Any]] = {}
        self.upcasters = Upcasters()
        self.cipher: FieldCipher | None = None
        """Encrypts and decrypts sensitive fields; set it with ``encrypt_with``."""

    def encrypt_with(self, cipher: FieldCipher | None) -> None:
        """Store sensitive fields encrypted by ``cipher`` (an ``eskit.privacy.Keyring``) and
        decrypt them on every read: ``decode``, ``upcast`` and ``open``."""
        self.cipher = cipher

    def register(self, name: str, version: int = 1) -> Callable[[type[E]], type[E]]:
        """Class decorator: store instances of the class as ``name`` at schema ``version``."""
        rules.check_name(name, "event type")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"schema version of {name!r} must be an int >= 1, got {version!r}")

        def add(cls: type[E]) -> type[E]:
            if name in self._by_name and self._by_name[name].cls is not cls:
                other = self._by_name[name].cls.__qualname__
                raise ValueError(f"event type {name!r} is already registered for {other}")
            if cls in self._by_class and self._by_class[cls].name != name:
                raise ValueError(f"{cls.__qualname__} is already registered as a different type")
            encode, decode = _codec(cls)
            entry = EventType(name, version, cls, encode, decode, sensitive_fields(cls))
            self._by_class[cls] = self._by_name[name] = entry
            if entry.sensitive:
                self._masks[name] = {field.name: field.mask for field in entry.sensitive}
            return cls

        return add

    def __contains__(self, cls: object) -> bool:
        return cls in self._by_class

    def current(self) -> dict[str, tuple[int, Callable[[JSONObject], Any]]]:
        """Decoders of today's versions by type name: the fast path of replays."""
        return {name: (entry.version, entry.decode) for name, entry in self._by_name.items()}

    def names(self) -> list[str]:
        """Every registered type name."""
        return sorted(self._by_name)

    def type_of(self, event: object) -> EventType:
        """The registration of ``event``'s class; ``UnknownEventType`` if it has none."""
        try:
            return self._by_class[type(event)]
        except KeyError:
            raise UnknownEventType(type(event).__qualname__, registered=False) from None

    def by_name(self, name: str) -> EventType:
        """The registration of a stored type name; ``UnknownEventType`` if none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(name) from None

    def encode(
        self, event: object, *, stream: str | None = None, event_id: uuid.UUID | None = None
    ) -> tuple[EventType, JSONObject]:
        """The registration of ``event`` and its data as a JSON object.

        Sensitive fields are encrypted, bound to ``stream`` and ``event_id``: an event
        with sensitive fields needs both, and a cipher (``PrivacyError`` otherwise).
        """
        entry = self.type_of(event)
        data = entry.encode(event)
        if not entry.sensitive:
            return entry, data
        if self.cipher is None:
            raise PrivacyError(
                f"{entry.name} has sensitive fields: give the registry a keyring"
                " (events.encrypt_with(keyring)) to store them encrypted"
            )
        if stream is None or event_id is None:
            raise PrivacyError(
                f"{entry.name} has sensitive fields: encoding it needs the stream and the"
                " event id its ciphertext is bound to"
            )
        return entry, self.cipher.seal(entry.sensitive, data, stream, event_id)

    def first_subject(self, event: object, stream: str) -> str | None:
        """The data subject of the first sensitive field ``event`` holds (in the order its
        class declares them) when written to ``stream``; None if it holds none."""
        entry = self.type_of(event)
        if not entry.sensitive:
            return None
        data = entry.encode(event)
        return next((subject_of(f, data, stream) for f in entry.sensitive if f.name in data), None)

    def open(self, recorded: RecordedEvent) -> RecordedEvent:
        """The stored event with its encrypted fields decrypted (masked if forgotten).

        Unchanged without encrypted fields. The values decrypted are noted in this
        process's memo (``eskit.domain.redaction.DECRYPTED``) so that no error text or log
        record about the event carries them. Raises ``PrivacyError`` when it holds some
        and the registry has no cipher, or when a ciphertext was altered or moved.
        """
        if self.cipher is None:
            if self._masks and holds_sealed(recorded.data):  # sensitive types, no keyring
                raise PrivacyError(
                    f"event {recorded.id} of {recorded.stream!r} holds encrypted fields:"
                    " give the registry a keyring (events.encrypt_with(keyring)) to read them"
                )
            return recorded
        masks = self._masks.get(recorded.type, {})
        data = self.cipher.open(recorded.data, recorded.stream, recorded.id, masks)
        if data is recorded.data:
            return recorded
        DECRYPTED.note(recorded.id, _decrypted(recorded.data, data, masks))
        return msgspec.structs.replace(recorded, data=data)

    def opener(self) -> Callable[[RecordedEvent], RecordedEvent] | None:
        """``open``, or None when no event can hold encrypted fields (replays skip it)."""
        return None if self.cipher is None and not self._masks else self.open

    def decode(self, recorded: RecordedEvent) -> list[Any]:
        """Today's events for a stored one: upcast from its stored version, then decoded.

        Usually one event; an upcaster may split an event into several or drop it (none).
        Raises ``UnknownEventType`` or ``UnsupportedEventVersion`` (a version newer than
        this code knows, e.g. written by a newer deployment), and ``ValueError`` for an
        event whose data is kept as bytes (``RecordedEvent.raw``: not a domain event).
        Encrypted fields are decrypted first (``open``).
        """
        if recorded.raw is not None:
            raise not_a_domain_event(recorded)
        recorded = self.open(recorded)
        version = recorded.metadata.get(SCHEMA_VERSION, 1)
        entry = self._by_name.get(recorded.type)
        if entry is not None and version == entry.version:  # the common case, kept cheap
            return [entry.decode(recorded.data)]
        return self.decode_old(recorded)

    def decode_old(self, recorded: RecordedEvent) -> list[Any]:
        """``decode`` for an event that is not of a current type and version: upcast it.
        Expects an event already ``open``-ed."""
        if recorded.raw is not None:
            raise not_a_domain_event(recorded)
        version = recorded.metadata.get(SCHEMA_VERSION, 1)
        return [
            self.by_name(name).decode(data)
            for name, data in self._upcast(recorded.type, version, recorded.data)
        ]

    def check(self, name: str, data: JSONObject, metadata: JSONObject) -> list[Any]:
        """Today's events an event stored as ``name`` with ``data`` and ``metadata`` becomes,
        upcast from the ``schema_version`` its metadata names (1 if none), else raise: what
        an event written without its class (a raw append) must pass, so that no replay,
        projection or command fails on it later.

        Raises ``UnknownEventType``, ``UnsupportedEventVersion``, ``ValueError`` for data
        that does not decode (naming the field) or a bad schema version, and
        ``PrivacyError`` for a type with sensitive fields: only ``encode`` stores them
        encrypted, as ``forget`` needs them.
        """
        version = metadata.get(SCHEMA_VERSION, 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"metadata {SCHEMA_VERSION} must be an int >= 1, got {version!r:.40}")
        decoded = []
        for current, current_data in self._upcast(name, version, data):
            entry = self.by_name(current)
            if entry.sensitive:
                fields = ", ".join(field.name for field in entry.sensitive)
                raise PrivacyError(
                    f"{current} has sensitive fields ({fields}): write it through its class"
                    " (a command), which stores them encrypted"
                )
            decoded.append(entry.decode(current_data))
        return decoded

    def upcast(self, recorded: RecordedEvent, *, open: bool = True) -> list[RecordedEvent]:
        """The stored event in today's schema, still as an envelope with JSON data: what
        read models want. Renamed, split or dropped by the upcasters; a type this registry
        does not know passes through unchanged. Encrypted fields are decrypted (``open``)
        unless ``open=False``, which leaves them as stored (a migration copies them). An
        event whose data is kept as bytes (``RecordedEvent.raw``) passes unchanged: no
        upcaster reads bytes."""
        if recorded.raw is not None:
            return [recorded]
        if open:
            recorded = self.open(recorded)
        version = recorded.metadata.get(SCHEMA_VERSION, 1)
        entry = self._by_name.get(recorded.type)
        if entry is None and not self.upcasters.knows(recorded.type):
            return [recorded]
        if entry is not None and version == entry.version:
            return [recorded]
        return [
            msgspec.structs.replace(recorded, type=name, data=data)
            for name, data in self._upcast(recorded.type, version, recorded.data)
        ]

    def _upcast(
        self, name: str, version: int, data: JSONObject
    ) -> Iterable[tuple[str, JSONObject]]:
        entry = self._by_name.get(name)
        current = entry.version if entry is not None else None
        if current is not None and version == current:
            yield name, data
            return
        if current is not None and version > current:
            raise UnsupportedEventVersion(name, version, current)
        upcaster = self.upcasters.get(name, version)
        if upcaster is None:
            if entry is None:
                raise UnknownEventType(name)
            raise UnsupportedEventVersion(name, version, current)
        for next_name, next_version, next_data in upcaster(data):
            yield from self._upcast(next_name, next_version, next_data)


def _decrypted(
    stored: JSONObject, opened: JSONObject, masks: dict[str, Any]
) -> list[tuple[str, Any]]:
    """The (key id, plaintext) of each field ``open`` decrypted, for redaction
    (``eskit.domain.redaction``); masks of forgotten subjects are no secret."""
    return [
        (value.get("k", ""), opened[name])
        for name, value in stored.items()
        if type(value) is dict and SEALED in value and opened[name] != masks.get(name, FORGOTTEN)
    ]


def _codec(cls: type[Any]) -> tuple[Callable[[Any], JSONObject], Callable[[JSONObject], Any]]:
    """Encoder and decoder for one event class, chosen once at registration."""
    if hasattr(cls, "model_validate") and hasattr(cls, "model_dump"):  # pydantic v2

        def encode_model(event: Any) -> JSONObject:
            data: JSONObject = msgspec.to_builtins(event.model_dump(mode="json"))
            return data

        return encode_model, cls.model_validate
    if not (issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)):
        raise TypeError(
            f"{cls.__qualname__} must be a dataclass, a msgspec.Struct or a pydantic model"
        )
    return to_json_object, functools.partial(from_json_object, cls)


def to_json_object(value: Any) -> JSONObject:
    """A dataclass or Struct as plain JSON types (tuples become lists, keys strings)."""
    data: JSONObject = _json_decode(_json_encode(value))
    return data


def from_json_object(cls: type[E], data: JSONObject) -> E:
    """The inverse of ``to_json_object`` (string keys convert back to int keys etc.).

    Plain ``convert`` first: asking for ``str_keys`` costs more than the conversion itself,
    and only classes with non-string dict keys need it.
    """
    try:
        return _convert(data, cls)
    except msgspec.ValidationError:
        return _convert(data, cls, str_keys=True)


_convert = msgspec.convert
_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def not_a_domain_event(recorded: RecordedEvent) -> ValueError:
    """The error for an event whose data is kept as bytes where a domain event is needed."""
    return ValueError(
        f"event {recorded.id} ({recorded.type}) of {recorded.stream!r} at version"
        f" {recorded.version} holds data as bytes ({recorded.content_type or 'no content type'}),"
        " not a JSON object: it is not a domain event, so no aggregate or decoder takes it"
    )
