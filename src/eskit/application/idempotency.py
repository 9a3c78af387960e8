"""What a command id was used for, so that a reused id replays only the same command.

The bus records, in the metadata of every event a command with a ``command_id`` appends,
the command's type (``command``) and a digest of its arguments (``command_digest``); a
command that wrote only to other streams (``AlsoAppend``) also records its aggregate's
stream (``command_stream``). When the id comes again, its first event is found by its
derived id and compared: the same type with the same digest is a retry and replays the
original result; anything else is another command and raises ``IdempotencyConflict``.

A command whose events hold encrypted personal data (``Sensitive`` fields) records no
digest (``command_digest`` is empty): a hash of its arguments would outlive the key that
``forget`` deletes and let anyone confirm a guess of them. Its id is checked by type and
aggregate only.

The digest is a SHA-256 (128 bits kept) over a canonical JSON encoding of the command:
its fields by name, sorted, nested classes alike, leaving out the fields equal to their
default, so that a retry sent after a release added a defaulted field to the class still
matches. Fields a retry may send differently, the moment it is sent (``now`` by default),
are left out too. Commands are msgspec Structs, dataclasses or pydantic models; any other
value is encoded as msgspec encodes it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Collection
from typing import Any, Final

import msgspec

from eskit.errors import IdempotencyConflict
from eskit.store.model import RecordedEvent

COMMAND: Final = "command"
DIGEST: Final = "command_digest"
STREAM: Final = "command_stream"

WITHHELD: Final = ""
"""The digest recorded for a command whose events hold encrypted personal data."""

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


def used_for(digest: str, only_others_of: str | None, *, personal: bool) -> dict[str, str]:
    """The metadata recording what a command id was used for: the digest (withheld when
    the events hold encrypted personal data) and, when the command wrote only to other
    streams (``only_others_of``), its aggregate's stream."""
    recorded = {DIGEST: WITHHELD if personal else digest}
    if only_others_of is not None:
        recorded[STREAM] = only_others_of
    return recorded


def check_reuse(
    first: RecordedEvent, command: object, stream: str, digest: str, command_id: object
) -> None:
    """Raise ``IdempotencyConflict`` unless ``first``, the first event written under
    ``command_id``, was written by this very command (type and arguments). Events written
    before digests were recorded are judged by their type alone; those whose digest was
    withheld, by type and aggregate."""
    used_by = first.metadata.get(COMMAND)
    recorded = first.metadata.get(DIGEST)
    aggregate = first.metadata.get(STREAM, first.stream)
    name = type(command).__qualname__
    if used_by == name and (
        recorded in (None, digest) or (recorded == WITHHELD and aggregate == stream)
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
