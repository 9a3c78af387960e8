"""What a command id was used for, so that a reused id replays only the same command.

The bus records, in the metadata of every event a command with a ``command_id`` appends,
the command's type (``command``) and a digest of its arguments (``command_digest``); a
command that wrote only to other streams (``AlsoAppend``) also records its aggregate's
stream (``command_stream``). When the id comes again, its first event is found by its
derived id and compared: the same type with the same digest is a retry and replays the
original result; anything else is another command and raises ``IdempotencyConflict``.
When a scavenge or an archive removed that event, its removal record keeps those keys
(``Removal.used_for``) and the id is judged alike.

A command whose events hold encrypted personal data (``Sensitive`` fields) records its
digest sealed like those fields (the registry's cipher: AES-GCM under a data subject's key,
bound to the command's first event), never in plaintext: a plain hash of its arguments
would outlive the key that ``forget`` deletes and let anyone confirm a guess of them. The
key is that of the subject of the first sensitive field of the first event that holds one
(the aggregate's events first, then those of ``AlsoAppend``). A reused id opens it and
compares as above. Once that subject is forgotten, the digest cannot be opened by anyone,
and the id is judged by type and aggregate only (the same type on the same aggregate
replays), as is an empty digest (recorded by a development build that withheld it).

The digest is a SHA-256 (128 bits kept) over a canonical JSON encoding of the command:
its fields by name, sorted, nested classes alike, leaving out the fields equal to their
default, so that a retry sent after a release added a defaulted field to the class still
matches. Fields a retry may send differently, the moment it is sent (``now`` by default),
are left out too. Commands are msgspec Structs, dataclasses or pydantic models; any other
value is encoded as msgspec encodes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Callable, Collection
from typing import Any, Final

import msgspec

from eskit.domain.sensitive import FieldCipher, SensitiveField, is_sealed
from eskit.errors import IdempotencyConflict, PrivacyError
from eskit.store.model import RecordedEvent
from eskit.store.scavenge import Removal

COMMAND: Final = "command"
DIGEST: Final = "command_digest"
STREAM: Final = "command_stream"

UNKNOWN: Final = ""
"""A digest no one can know any more: sealed with a forgotten subject's key (or withheld)."""

SEALED_AS: Final = "metadata.command_digest"
"""The field name a sealed digest's ciphertext is bound to (with the first event's stream
and id, and the key id), so that it opens as nothing else and nothing else opens as it."""

_SUBJECT: Final = "subject"
_SEALED_DIGEST: Final = SensitiveField(SEALED_AS, _SUBJECT, UNKNOWN)

_NO_DEFAULT: Final = object()


def command_digest(command: object, retry_may_change: Collection[str] = ("now",)) -> str:
    """The digest of ``command``'s arguments, without the fields named in
    ``retry_may_change``. Raises ``TypeError`` naming a value JSON cannot encode."""
    arguments = _canonical(command, frozenset(retry_may_change))
    try:
        encoded = msgspec.json.encode(arguments, order="sorted")
    except (TypeError, msgspec.EncodeError) as error:
        raise TypeError(
            f"{type(command).__qualname__}: a command sent with a command id must hold"
            f" JSON-encodable values (to recognise its retries): {error}"
        ) from None
    return hashlib.sha256(encoded).hexdigest()[:32]


def used_for(digest: Any, only_others_of: str | None) -> dict[str, Any]:
    """The metadata recording what a command id was used for: the digest (plain, or sealed
    by ``seal``) and, when the command wrote only to other streams (``only_others_of``),
    its aggregate's stream."""
    recorded = {DIGEST: digest}
    if only_others_of is not None:
        recorded[STREAM] = only_others_of
    return recorded


def seal(
    cipher: FieldCipher | None, digest: str, subject: str, stream: str, event_id: uuid.UUID
) -> Any:
    """``digest`` encrypted with ``subject``'s key by the registry's cipher, as a sensitive
    field is, bound to the command's first event (``stream``, ``event_id``)."""
    if cipher is None:
        raise PrivacyError(
            "the command's events have sensitive fields: give the registry a keyring"
            " (events.encrypt_with(keyring)) to store them encrypted"
        )
    fields = {SEALED_AS: digest, _SUBJECT: subject}
    return cipher.seal((_SEALED_DIGEST,), fields, stream, event_id)[SEALED_AS]


def recorded_digest(first: RecordedEvent, cipher: FieldCipher | None) -> Any:
    """The digest ``first`` records: None if none (a release before digests), ``UNKNOWN``
    if it was sealed with a key ``forget`` has deleted. Raises ``PrivacyError`` for a
    sealed digest that was altered or moved, or with no cipher to open it."""
    recorded = first.metadata.get(DIGEST)
    if not is_sealed(recorded):
        return recorded
    if cipher is None:
        raise PrivacyError(
            f"event {first.id} of {first.stream!r} holds an encrypted command digest:"
            " give the registry a keyring (events.encrypt_with(keyring)) to read it"
        )
    opened = cipher.open({SEALED_AS: recorded}, first.stream, first.id, {SEALED_AS: UNKNOWN})
    return opened[SEALED_AS]


def removed_first(gone: Removal, event_id: uuid.UUID) -> RecordedEvent:
    """The first event of a command, as its removal record keeps it: its place and the
    metadata recording what its command id was used for (a sealed digest opens as it did,
    bound to the same stream and id); its contents are gone."""
    return RecordedEvent(
        event_id,
        gone.stream,
        gone.version,
        gone.position,
        "",
        {},
        gone.used_for or {},
        dt.datetime.fromtimestamp(0, dt.UTC),
    )


def check_reuse(
    first: RecordedEvent,
    command: object,
    stream: str,
    digest: str,
    command_id: object,
    cipher: FieldCipher | None,
) -> None:
    """Raise ``IdempotencyConflict`` unless ``first``, the first event written under
    ``command_id``, was written by this very command (type and arguments); ``cipher``
    opens a sealed digest. Events written before digests were recorded are judged by
    their type alone; those whose digest no one can know (``UNKNOWN``), by type and
    aggregate."""
    used_by = first.metadata.get(COMMAND)
    recorded = recorded_digest(first, cipher)
    aggregate = first.metadata.get(STREAM, first.stream)
    name = type(command).__qualname__
    if used_by == name and (
        recorded in (None, digest) or (recorded == UNKNOWN and aggregate == stream)
    ):
        return
    if used_by != name:
        differs = f"not by {name}"
    elif aggregate != stream:
        differs = f"with other arguments (this one is for {stream})"
    else:
        differs = "with other arguments"
    raise IdempotencyConflict(
        stream,
        f"command id {command_id} was already used by {used_by} on {aggregate}, {differs};"
        " a command id names one command: send another command with a new id",
    )


def _canonical(value: Any, ignored: frozenset[str] = frozenset()) -> Any:
    """``value`` as plain data: classes as dicts of their fields that are not at their
    default (and not ``ignored``), nested values alike."""
    defaults = _defaults(type(value))
    if defaults is not None:
        fields = ((name, getattr(value, name)) for name in defaults if name not in ignored)
        return {
            name: _canonical(field)
            for name, field in fields
            if not _is_default(field, defaults[name]())
        }
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _is_default(value: Any, default: Any) -> bool:
    return default is not _NO_DEFAULT and type(value) is type(default) and value == default


_Defaults = dict[str, Callable[[], Any]] | None
_known: dict[type[Any], _Defaults] = {}


def _defaults(kind: type[Any]) -> _Defaults:
    """Each field of a command class with a function giving its default (or
    ``_NO_DEFAULT``); None for a value that is not such a class. Worked out once a class."""
    if kind not in _known:
        _known[kind] = _fields_of(kind)
    return _known[kind]


def _fields_of(kind: type[Any]) -> _Defaults:
    if issubclass(kind, msgspec.Struct):
        return {
            f.name: _default_of(f.default, f.default_factory, msgspec.NODEFAULT)
            for f in msgspec.structs.fields(kind)
        }
    if dataclasses.is_dataclass(kind):
        return {
            f.name: _default_of(f.default, f.default_factory, dataclasses.MISSING)
            for f in dataclasses.fields(kind)
        }
    model_fields = getattr(kind, "model_fields", None)  # pydantic, without importing it
    if isinstance(model_fields, dict) and hasattr(kind, "model_dump"):
        return {
            name: (
                (lambda: _NO_DEFAULT)
                if field.is_required()
                else functools.partial(field.get_default, call_default_factory=True)
            )
            for name, field in model_fields.items()
        }
    return None


def _default_of(default: Any, factory: Any, missing: Any) -> Callable[[], Any]:
    if default is not missing:
        return lambda: default
    if factory is not missing:
        return factory  # type: ignore[no-any-return]
    return lambda: _NO_DEFAULT
