"""Sensitive event fields: personal data of one data subject, stored encrypted.

A field is marked on the event class, so the mark travels with the schema::

    @events.register("CustomerRegistered")
    class CustomerRegistered(msgspec.Struct):
        customer_id: str
        email: Annotated[str, Sensitive(subject="customer_id")]
        name: Annotated[str, Sensitive(subject="customer_id")]

The domain layer only knows which fields are sensitive, whose they are, and what a reader
gets once the subject is forgotten (the mask). Encryption itself is a ``FieldCipher``
plugged into the registry at run time (``eskit.privacy.Keyring``): this module needs no
cryptography, and an event with sensitive fields is never stored in plaintext because a
cipher was forgotten (the registry refuses to encode it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Protocol

import msgspec

from eskit.store.model import JSONObject

FORGOTTEN: Final = "[forgotten]"
"""What a sensitive ``str`` field reads as once its subject is forgotten (the default mask)."""

SEALED: Final = "$enc"
"""The key that tags a stored field value as encrypted: ``{"$enc": "v1", "k": ..., ...}``."""

_NO_MASK: Final = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Sensitive:
    """Marks an event field as personal data of one data subject, stored encrypted.

    ``subject`` names the field of the same event that holds the data subject's id
    (``"customer_id"``); None means the id of the event's stream (``customer-c-7`` ->
    ``c-7``). ``mask`` is what the field reads as after the subject is forgotten; it
    defaults to ``FORGOTTEN`` for ``str`` fields and None for optional ones, and must be
    given (a value of the field's type) for any other type.
    """

    subject: str | None = None
    mask: Any = _NO_MASK


@dataclasses.dataclass(frozen=True, slots=True)
class SensitiveField:
    """One sensitive field as stored: its JSON key, its subject's JSON key, its mask."""

    name: str
    subject: str | None
    mask: Any


class FieldCipher(Protocol):
    """What the registry needs to store sensitive fields encrypted (``eskit.privacy``)."""

    def seal(
        self,
        fields: Sequence[SensitiveField],
        data: JSONObject,
        stream: str,
        event_id: uuid.UUID,
    ) -> JSONObject:
        """``data`` with the values of ``fields`` encrypted, bound to stream, id and field."""
        ...

    def open(
        self, data: JSONObject, stream: str, event_id: uuid.UUID, masks: Mapping[str, Any]
    ) -> JSONObject:
        """``data`` with its encrypted values decrypted, or masked if their key is gone."""
        ...


def is_sealed(value: object) -> bool:
    """Whether a stored field value is an encrypted one."""
    return type(value) is dict and SEALED in value


def holds_sealed(data: JSONObject) -> bool:
    """Whether some top-level field of stored event data is encrypted."""
    return any(type(value) is dict and SEALED in value for value in data.values())


def subject_of(field: SensitiveField, data: JSONObject, stream: str) -> str:
    """The id of the data subject a field belongs to: another field's value, or the
    stream's id (the part after the category)."""
    if field.subject is None:
        return stream.split("-", 1)[1] if "-" in stream else stream
    value = data.get(field.subject)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ValueError(
            f"field {field.name!r} belongs to the subject named by {field.subject!r},"
            " which must be a non-empty string or int"
        )
    return str(value)


def sensitive_fields(cls: type[Any]) -> tuple[SensitiveField, ...]:
    """The sensitive fields of an event class (dataclass, msgspec Struct or pydantic model).

    Raises ``TypeError`` for a mark eskit would not honour: a ``Sensitive`` inside another
    type (``Annotated[str, Sensitive()] | None``: mark the whole field instead), a missing
    or invalid mask, or a subject that is not a field of the class.
    """
    names = _field_names(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError:
        # Unresolvable forward references (a class defined in a function): only refuse if
        # a Sensitive mark could be hiding there, never store it in plaintext silently.
        if any("Sensitive" in str(a) for a in getattr(cls, "__annotations__", {}).values()):
            raise TypeError(
                f"{cls.__qualname__} marks Sensitive fields but its annotations cannot be"
                " resolved: define the class and the types it uses at module level"
            ) from None
        return ()
    found = []
    for attribute, stored in names.items():
        hint = hints.get(attribute)
        mark = _mark(cls, attribute, hint)
        if mark is None:
            continue
        base = typing.get_args(hint)[0]
        subject = None
        if mark.subject is not None:
            if mark.subject not in names:
                raise TypeError(
                    f"{cls.__qualname__}.{attribute}: subject {mark.subject!r} is not a field"
                    f" of {cls.__qualname__}"
                )
            subject = names[mark.subject]
        found.append(SensitiveField(stored, subject, _mask(cls, attribute, base, mark.mask)))
    return tuple(found)


def _field_names(cls: type[Any]) -> dict[str, str]:
    """Attribute name -> the key it is stored under in the event's JSON."""
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
    if dataclasses.is_dataclass(cls):
        return {f.name: f.name for f in dataclasses.fields(cls)}
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict):  # pydantic: model_dump() keys by field name
        return {name: name for name in model_fields}
    return {}


def _mark(cls: type[Any], attribute: str, hint: Any) -> Sensitive | None:
    """The field's own ``Sensitive`` mark; ``TypeError`` if one hides deeper in its type."""
    marks: list[Sensitive] = []
    if typing.get_origin(hint) is Annotated:
        marks = [m for m in hint.__metadata__ if isinstance(m, Sensitive)]
        inner = typing.get_args(hint)[0]
    else:
        inner = hint
    if len(marks) > 1:
        raise TypeError(f"{cls.__qualname__}.{attribute} is marked Sensitive twice")
    if _mentions_sensitive(inner):
        raise TypeError(
            f"{cls.__qualname__}.{attribute}: Sensitive must mark the whole field, e.g."
            " Annotated[str | None, Sensitive()], not a part of its type"
        )
    return marks[0] if marks else None


def _mentions_sensitive(hint: Any) -> bool:
    if typing.get_origin(hint) is Annotated and any(
        isinstance(m, Sensitive) for m in hint.__metadata__
    ):
        return True
    return any(_mentions_sensitive(arg) for arg in typing.get_args(hint))


def _mask(cls: type[Any], attribute: str, base: Any, mask: Any) -> Any:
    """The mask as JSON, checked against the field's type."""
    where = f"{cls.__qualname__}.{attribute}"
    if mask is _NO_MASK:
        if base is str:
            return FORGOTTEN
        if _accepts_none(base):
            return None
        raise TypeError(
            f"{where} is Sensitive but not a str: give Sensitive(mask=...) a value of its"
            " type for readers to get once the subject is forgotten"
        )
    try:
        stored = msgspec.to_builtins(mask)
        msgspec.convert(stored, base, strict=False)
    except msgspec.ValidationError as error:
        raise TypeError(f"{where}: the mask {mask!r} is not a valid value: {error}") from None
    except TypeError:  # a type msgspec cannot check (e.g. pydantic's own): trust the user
        stored = mask
    return stored


def _accepts_none(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return type(None) in typing.get_args(hint)
    return hint is None or hint is type(None)
