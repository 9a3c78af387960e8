"""Pure checks shared by every backend: names, payloads, expected versions, visibility,
snapshots.

Nothing here does IO, so each rule is written once and every backend agrees on it.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec

from eskit.errors import IdempotencyConflict, WrongExpectedVersion
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RawData,
    Snapshot,
    StreamMetadata,
    StreamState,
)
from eskit.store.nesting import check_nesting, may_nest_too_deep

MAX_NAME_LENGTH: Final = 200
DEFAULT_MAX_EVENT_SIZE: Final = 1024 * 1024
"""Largest encoded data + metadata of one event, in bytes (1 MiB); also the largest
snapshot state."""
MAX_NESTING: Final = 100
"""Deepest nesting of objects and arrays in event data, metadata and snapshot state, the
outer object counted (``{"a": [{}]}`` is 3 deep). JSON parsers and encoders recurse: a
payload nested thousands deep would fail deep inside one of them, or in a reader later."""
SNAPSHOTS_KEPT: Final = 5
"""Snapshots kept per stream and snapshot_version: saving another deletes the oldest (lowest
version). A few, not one, so that a reader asking for an older ``max_version`` still finds one."""

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class PreparedEvent(msgspec.Struct, frozen=True, gc=False):
    """A validated event, encoded once, ready for any backend to write.

    Data given as ``RawData`` is ``data = "{}"`` and its content type and bytes; metadata
    given so is ``metadata = "{}"`` and its bytes (``Raw``, as the planner's rows hold it).
    """

    id: uuid.UUID | None
    type: str
    data: str
    metadata: str
    content_type: str | None = None
    raw_data: bytes | None = None
    raw_metadata: bytes | None = None


class PreparedAppend(msgspec.Struct, frozen=True, gc=False):
    """A validated append to one stream, its events encoded, ready for any backend."""

    stream: str
    events: list[PreparedEvent]
    expected: ExpectedVersion
    raw: bool = False
    """Whether an event holds a payload kept as bytes (``RawData``)."""
    deleted_keeps_revision: bool = False
    """Whether a soft-deleted stream also matches its last version before the delete as
    the expected version (``check_version_matches``)."""
    if_untouched: bool = False
    """Whether to refuse the append (``planner.StreamTouched``) unless the stream has no
    ``streams`` row, so never hid an event: the command bus's append from a kept state."""


class PreparedSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A validated snapshot, its state encoded once as a JSON object."""

    stream: str
    snapshot_version: int
    version: int
    state: str


class ExistingEvent(NamedTuple):
    """Where an already written event id sits (for idempotent retries)."""

    stream: str
    version: int
    position: int


def category(stream: str) -> str:
    """The part of a stream name before its first ``-`` (``invoice-42`` -> ``invoice``).
    (``partition``, not ``split``: a tuple instead of a list, ~200 instructions less.)"""
    return stream.partition("-")[0]


def check_name(name: object, what: str = "stream name") -> str:
    """Return ``name`` if it is a usable stream or event type name.

    Names are 1 to 200 characters without control characters; names starting with ``$``
    are reserved for eskit's own system streams. Raises ``TypeError`` for a name that is
    not a str, ``ValueError`` for a str that breaks these rules.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}: {name!r:.60}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(name)} characters long; at most {MAX_NAME_LENGTH}")
    if not name.isprintable():
        raise ValueError(f"{what} {name!r} contains control characters")
    if name[0] == "$":  # (not startswith: its arguments are parsed, ~400 instructions more)
        raise ValueError(f"{what} {name!r} starts with '$', which is reserved for eskit")
    return name


def check_expected_version(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is ANY, NO_STREAM, STREAM_EXISTS or a version >= 0:
    ``TypeError`` for anything else but a negative int, which is a ``ValueError``."""
    if type(expected) is StreamState:  # (not isinstance: for an int, ~800 instructions more)
        return expected  # (an Enum with members has no subclasses)
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return expected
    message = (
        "expected_version must be eskit.ANY, eskit.NO_STREAM, eskit.STREAM_EXISTS "
        f"or a version >= 0, got {expected!r:.60}"
    )
    if isinstance(expected, int) and not isinstance(expected, bool):
        raise ValueError(message)
    raise TypeError(message)


def check_version_matches(
    stream: str,
    expected: ExpectedVersion,
    last: int | None,
    deleted: bool = False,
    deleted_keeps_revision: bool = False,
) -> None:
    """Raise ``WrongExpectedVersion`` unless a stream whose last event is ``last`` (None:
    no events) is as ``expected``; a soft-``deleted`` stream counts as having none, and
    with ``deleted_keeps_revision`` (KurrentDB's view, for the gRPC layer) also as still
    at ``last``, its last version before the delete."""
    if expected is ANY:
        return
    actual = last
    if deleted:
        if deleted_keeps_revision and expected == last:
            return
        actual = None
    if expected is NO_STREAM:
        if actual is None:  # returns, not a flag tested after: fewer steps on every append
            return
    elif expected is STREAM_EXISTS:
        if actual is not None:
            return
    elif actual == expected:
        return
    raise WrongExpectedVersion(stream, expected, actual, deleted)


def prepare(events: Sequence[NewEvent], max_event_size: int) -> list[PreparedEvent]:
    """Validate and encode a batch before anything is written.

    Raises ``TypeError`` for what is not a list of ``NewEvent`` (or an event's type name or
    id of the wrong type) and ``ValueError`` for a bad value: no events, an invalid type
    name, data or metadata that is not a JSON object, nested deeper than ``MAX_NESTING``
    or over ``max_event_size``.
    """
    return _prepare_events(events, max_event_size)[0]


def _prepare_events(
    events: Sequence[NewEvent], max_event_size: int
) -> tuple[list[PreparedEvent], bool]:
    """``prepare``, and whether an event holds a payload kept as bytes.

    The common case in a few calls per event, here (not in a function of its own: a call
    less per append): each payload is encoded once and checked (``_exact_json``); metadata
    shared by consecutive events is checked once. An event that needs a closer look stops
    it: ``_prepare_closely`` then finds and names what is off, event by event.
    """
    if type(events) is not list and (  # a list, the common case, skips the ABC's check
        isinstance(events, NewEvent) or not isinstance(events, Sequence)
    ):
        raise TypeError(f"events must be a list of eskit.NewEvent, got {type(events).__name__}")
    if not events:
        raise ValueError("an append needs at least one event")
    prepared: list[PreparedEvent] = []
    add = prepared.append
    last_meta: object = None
    meta_json, meta_size = "{}", 2
    try:
        for e in events:
            if type(e) is not NewEvent or e.type not in _checked_types:
                break
            data, meta, id_ = e.data, e.metadata, e.id
            if type(data) is not dict or (id_ is not None and type(id_) is not uuid.UUID):
                break  # RawData, or anything else: closer look
            encoded = _exact_json(data)
            if encoded is None:
                break
            if meta is not last_meta:
                last_meta = meta
                if meta is None or (type(meta) is dict and not meta):
                    meta_json, meta_size = "{}", 2
                elif type(meta) is not dict or (encoded_meta := _exact_json(meta)) is None:
                    break
                else:
                    meta_json, meta_size = encoded_meta.decode(), len(encoded_meta)
            if len(encoded) + meta_size > max_event_size:
                break  # too large: measured again, and named, event by event
            add(PreparedEvent(id_, e.type, encoded.decode(), meta_json))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        pass
    raw = False
    if len(prepared) != len(events):  # stopped: something is off (or raw)
        prepared, raw = _prepare_closely(events, max_event_size)
    if len(prepared) > 1:  # one event's id cannot repeat
        ids = [p.id for p in prepared if p.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("the same event id appears twice in one append")
    return prepared, raw


def prepare_append(
    stream: str,
    events: Sequence[NewEvent],
    expected_version: ExpectedVersion,
    max_event_size: int,
    deleted_keeps_revision: bool = False,
    if_untouched: bool = False,
) -> PreparedAppend:
    """Validate and encode the append of ``events`` to ``stream``; raise ``ValueError`` if bad."""
    name = check_name(stream)
    expected = check_expected_version(expected_version)
    prepared, raw = _prepare_events(events, max_event_size)
    return PreparedAppend(name, prepared, expected, raw, deleted_keeps_revision, if_untouched)


def prepare_many(appends: object, max_event_size: int) -> list[PreparedAppend]:
    """Validate and encode the appends of one ``append_many``; raise ``ValueError`` if bad.

    Each stream may appear once: a second part's expected version would have to allow for
    the first, and its retry could not be told from a new append. An event id may appear
    once in the whole call, as in one append. ``TypeError`` for arguments of the wrong type.
    """
    if isinstance(appends, Append | str) or not isinstance(appends, Sequence):
        raise TypeError(f"appends must be a list of eskit.Append, got {type(appends).__name__}")
    if not appends:
        raise ValueError("append_many needs at least one eskit.Append")
    prepared = [_prepare_part(i, part, max_event_size) for i, part in enumerate(appends)]
    seen: set[str] = set()
    for part in prepared:
        if part.stream in seen:
            raise ValueError(f"stream {part.stream!r} appears twice in one append_many")
        seen.add(part.stream)
    ids = [e.id for part in prepared for e in part.events if e.id is not None]
    if len(ids) != len(set(ids)):
        raise ValueError("the same event id appears twice in one append_many")
    return prepared


def _prepare_part(index: int, part: object, max_event_size: int) -> PreparedAppend:
    if not isinstance(part, Append):
        raise TypeError(f"appends[{index}] must be an eskit.Append, got {type(part).__name__}")
    try:
        return prepare_append(part.stream, part.events, part.expected_version, max_event_size)
    except TypeError as error:
        raise TypeError(f"appends[{index}]: {error}") from error
    except ValueError as error:
        raise ValueError(f"appends[{index}]: {error}") from error


_checked_types: set[str] = set()

_SHORT: Final = 2 * MAX_NESTING
"""JSON no longer than this cannot nest deeper than ``MAX_NESTING`` (each level takes two
brackets): its nesting is not measured."""


def _prepare_closely(
    events: Sequence[NewEvent], max_event_size: int
) -> tuple[list[PreparedEvent], bool]:
    """Each event checked on its own (``_prepare_one``), so that what is off is named; and
    whether one holds a payload kept as bytes."""
    prepared = [_prepare_one(i, e, max_event_size) for i, e in enumerate(events)]
    raw = any(p.content_type is not None or p.raw_metadata is not None for p in prepared)
    return prepared, raw


def _prepare_one(index: int, event: object, max_event_size: int) -> PreparedEvent:
    if not isinstance(event, NewEvent):
        raise TypeError(f"event {index} must be an eskit.NewEvent, got {type(event).__name__}")
    check_name(event.type, "event type")
    if len(_checked_types) < 10_000:  # the set of type names in use is small
        _checked_types.add(event.type)
    if event.id is not None and not isinstance(event.id, uuid.UUID):
        raise TypeError(f"event {index} id must be a uuid.UUID, got {event.id!r:.60}")
    where = f"event {index} ({event.type})"
    content_type = raw_data = raw_metadata = None
    if isinstance(event.data, RawData):
        content_type, raw_data = _checked_raw(event.data, f"{where} data")
        data = b"{}"
    else:
        data = _checked_json(event.data, f"{where} data", "data")
    metadata = b"{}"
    if isinstance(event.metadata, RawData):
        raw_metadata = _checked_raw(event.metadata, f"{where} metadata")[1]
    elif event.metadata is not None:  # None, the default, means no metadata: anything else is
        metadata = _checked_json(event.metadata, f"{where} metadata", "metadata")
    size = sum(len(part or b"") for part in (data, metadata, raw_data, raw_metadata))
    if size > max_event_size:
        raise ValueError(
            f"event {index} ({event.type}) is {size} bytes of"
            f" {'JSON' if raw_data is raw_metadata is None else 'data and metadata'};"
            f" the limit is {max_event_size}"
        )
    return PreparedEvent(
        event.id,
        event.type,
        data.decode(),
        metadata.decode(),
        content_type,
        raw_data,
        raw_metadata,
    )


def _checked_raw(raw: RawData, where: str) -> tuple[str, bytes]:
    """The content type and bytes of a raw payload; ``TypeError`` if they are not a str
    and bytes, ``ValueError`` for a content type too long or with control characters."""
    content_type, body = raw.content_type, raw.body
    if not isinstance(content_type, str):
        raise TypeError(f"{where} content_type must be a str, got {content_type!r:.60}")
    if len(content_type) > MAX_NAME_LENGTH or not content_type.isprintable():
        raise ValueError(
            f"{where} content_type must be at most {MAX_NAME_LENGTH} printable characters,"
            f" got {content_type!r:.60}"
        )
    if not isinstance(body, bytes):
        raise TypeError(f"{where} body must be bytes, got {type(body).__name__}")
    return content_type, body


def _checked_json(value: object, where: str, root: str) -> bytes:
    """The JSON of ``value``; ``ValueError`` saying why if it is not a JSON object that reads
    back exactly, nested at most ``MAX_NESTING`` deep (``root`` begins the path named)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object (dict), got {type(value).__name__}")
    encoded = _exact_json(value)
    if encoded is None:  # too deep (named with its path), or not JSON
        check_nesting(value, where, root, MAX_NESTING)
        raise ValueError(_not_json(value, where))
    return encoded


_SCALARS: Final = frozenset({str, int, bool, type(None)})
"""Exact types of a value that msgspec encodes so that it decodes equal, or refuses (a lone
surrogate, an int past Python's limit of digits): floats too when finite."""


def _exact_json(value: dict[Any, Any]) -> bytes | None:
    """The JSON of a dict that reads back exactly the same, nested at most ``MAX_NESTING``
    deep, else None.

    A dict of str keys and scalar values (``_SCALARS``, finite floats; exact types, as a
    subclass may encode otherwise) reads back by construction: checking their types costs
    less than decoding and comparing (~450 instructions an item against ~700). Anything else
    is read back, the cheap, complete check: msgspec happily encodes datetimes, sets, tuples
    and NaN, but none of them decode back to an equal value.
    """
    try:
        encoded = _encode(value)  # RecursionError if absurdly deep
        if type(value) is dict:  # (a subclass's items() may not be what is encoded)
            for k, v in value.items():
                if type(k) is not str or (
                    type(v) not in _SCALARS and not (type(v) is float and math.isfinite(v))
                ):
                    break
            else:
                return encoded
        if len(encoded) > _SHORT and may_nest_too_deep(encoded, MAX_NESTING):
            return None
        return encoded if _decode(encoded) == value else None
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        return None


def _not_json(value: object, where: str) -> str:
    if not isinstance(value, dict):
        return f"{where} must be a JSON object (dict), got {type(value).__name__}"
    problem = _first_non_json(value, "$") or "it does not read back the same"
    return f"{where} is not JSON: {problem}"


def _first_non_json(value: Any, path: str) -> str | None:
    """Describe the first value under ``path`` that JSON cannot hold exactly, if any."""
    if value is None or isinstance(value, bool | str | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} = {value} is not a finite number"
    if isinstance(value, list):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, dict):
        bad_key = next((k for k in value if not isinstance(k, str)), None)
        if bad_key is not None:
            return f"{path} has a non-string key {bad_key!r}"
        items = ((f"{path}.{k}", item) for k, item in value.items())
    else:
        return f"{path} is a {type(value).__name__}, which JSON cannot hold ({value!r:.60})"
    return next((p for p in (_first_non_json(v, k) for k, v in items) if p), None)


def replayed_append(
    stream: str,
    expected: ExpectedVersion,
    existing: Sequence[ExistingEvent | None],
) -> AppendResult | None:
    """Decide what an append means given where its event ids were already written.

    Returns None when none of the ids exist (a new append), or the original result when all
    of them were written before as this very batch in this stream (a retry: nothing is
    written again). Raises ``IdempotencyConflict`` for anything in between.
    """
    found = [e for e in existing if e is not None]
    if not found:
        return None
    if len(found) != len(existing):
        raise IdempotencyConflict(
            stream, f"{len(found)} of the {len(existing)} event ids were already written"
        )
    elsewhere = [e.stream for e in found if e.stream != stream]
    if elsewhere:
        raise IdempotencyConflict(stream, f"an event id is already used in stream {elsewhere[0]!r}")
    first = found[0].version
    if any(e.version != first + i for i, e in enumerate(found)):
        raise IdempotencyConflict(stream, "the ids were written, but not as this batch in order")
    if isinstance(expected, int) and first != expected + 1:
        raise IdempotencyConflict(
            stream, f"the batch was written at version {first}, not after version {expected}"
        )
    return AppendResult(found[-1].version, found[-1].position, len(found))


MAX_INT64: Final = 2**63 - 1
"""The largest integer SQL databases store; no version or position can come near it."""


def clamp(value: int) -> int:
    """``value``, or ``MAX_INT64`` if larger: a bound past every event means the same."""
    return min(value, MAX_INT64)


def first_visible_version(metadata: StreamMetadata, last_version: int) -> int:
    """The lowest version a stream read may show, by ``truncate_before`` and ``max_count``."""
    first = metadata.truncate_before or 0
    if metadata.max_count is not None:
        first = max(first, last_version - metadata.max_count + 1)
    return first


def oldest_visible_time(metadata: StreamMetadata, now: dt.datetime) -> dt.datetime | None:
    """Events recorded before this time are hidden by ``max_age`` (None: no age limit)."""
    if metadata.max_age is None:
        return None
    try:
        return now - dt.timedelta(seconds=metadata.max_age)
    except OverflowError:  # older than the calendar: nothing is that old
        return None


def read_bounds(
    metadata: StreamMetadata | None,
    now: dt.datetime,
    from_version: int | None,
    backwards: bool,
) -> tuple[int, int, dt.datetime | None]:
    """What a SQL backend's page of ``read_stream`` asks for: the version to start from,
    the lowest visible version by ``truncate_before`` and the oldest visible time (None: no
    age limit). ``max_count``'s bound depends on the stream's last version: the page's own
    statement reads that (``version_conditions``), so that the window and the events it shows
    come from one snapshot and a read never shows more than ``max_count`` events, whatever
    appends run meanwhile."""
    first, oldest = 0, None
    if metadata is not None:
        first = metadata.truncate_before or 0
        oldest = oldest_visible_time(metadata, now)
    if backwards:
        start = MAX_INT64 if from_version is None else clamp(from_version)
    else:
        start = clamp(max(first, from_version or 0))
    return start, first, oldest


def version_conditions(
    sql: SqlNames, stream: str, start: int, first: int, max_count: int | None, backwards: bool
) -> tuple[str, list[Any]]:
    """The version conditions of a page of ``stream`` from ``start`` (``read_bounds``) and
    their parameters. With ``max_count``, the lowest version shown is the larger of
    ``first`` and the first of the newest ``max_count`` versions, the newest read by that
    very statement: one snapshot, so a read never shows more than ``max_count`` events
    whatever appends run meanwhile. Forwards, ``start`` is never below ``first``."""
    mark = sql.mark
    if max_count is None:
        return f"version {'<=' if backwards else '>='} {mark} AND version >= {mark}", [start, first]
    newest = f"(SELECT max(version) FROM {sql.events} WHERE stream = {mark})"
    window = [stream, clamp(max_count)]
    if backwards:  # one lower bound, so that the index range starts there
        lowest = f"{sql.greatest}({mark}, {newest} - {mark} + 1)"
        return f"version <= {mark} AND version >= {lowest}", [start, first, *window]
    return f"version >= {sql.greatest}({mark}, {newest} - {mark} + 1)", [start, *window]


class SqlNames(NamedTuple):
    """What ``version_conditions`` needs to know of a backend's SQL."""

    events: str
    mark: str
    """The driver's placeholder."""
    greatest: str
    """The function giving the larger of its arguments."""


def stored_metadata(
    metadata: StreamMetadata,
) -> tuple[int | None, int | None, float | None, str | None]:
    """(truncate_before, max_count, max_age, custom) as SQL stores them: counts beyond a
    64-bit integer clamped (they mean the same), custom keys as JSON text."""
    custom = metadata.custom
    return (
        None if metadata.truncate_before is None else clamp(metadata.truncate_before),
        None if metadata.max_count is None else clamp(metadata.max_count),
        metadata.max_age,
        None if custom is None else _encode(custom).decode(),
    )


def loaded_metadata(
    truncate_before: int | None, max_count: int | None, max_age: float | None, custom: str | None
) -> StreamMetadata:
    """Stream metadata as ``stored_metadata`` stored it."""
    decoded = None if custom is None else _decode(custom)
    return StreamMetadata(truncate_before, max_count, max_age, decoded)


def prepare_snapshot(snapshot: object, max_size: int) -> PreparedSnapshot:
    """Validate a snapshot and encode its state; raise ``ValueError`` if bad.

    The state must be a JSON object that reads back exactly (like event data), nested at
    most ``MAX_NESTING`` deep and at most ``max_size`` bytes of JSON. ``TypeError`` for a
    snapshot, stream or number of the wrong type.
    """
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"snapshot must be an eskit.Snapshot, got {type(snapshot).__name__}")
    stream = check_name(snapshot.stream)
    version = check_number("version", snapshot.version)
    snapshot_version = check_number("snapshot_version", snapshot.snapshot_version)
    state = _checked_json(snapshot.state, f"snapshot state of {stream!r}", "state")
    if len(state) > max_size:
        raise ValueError(
            f"snapshot state of {stream!r} is {len(state)} bytes of JSON; the limit is {max_size}"
        )
    return PreparedSnapshot(stream, snapshot_version, version, state.decode())


def check_number(name: str, value: object) -> int:
    """Return ``value`` if it is an int from 0 to ``MAX_INT64`` (a version, a schema number):
    ``TypeError`` if it is not an int (a bool is not), ``ValueError`` if out of range."""
    check_count(name, value)
    assert isinstance(value, int)
    if value > MAX_INT64:
        raise ValueError(f"{name} must be an int from 0 to {MAX_INT64}, got {value!r}")
    return value


def check_count(name: str, value: object, minimum: int = 0) -> None:
    """``TypeError`` unless ``value`` is an int (a bool is not one), ``ValueError`` if it is
    below ``minimum``: the check of every version, position and limit a store method takes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r:.60}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_optional_count(name: str, value: object, minimum: int = 0) -> None:
    """``check_count``, with None allowed (no bound)."""
    if value is not None:
        check_count(name, value, minimum)


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool; ``TypeError`` otherwise (``"no"`` is true to Python)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}: {value!r:.60}")
    return value


def lowest_snapshot_version(metadata: StreamMetadata) -> int:
    """Snapshots below this version are hidden: every event they fold in is hidden by
    ``truncate_before`` (a soft delete sets it past them), and loading one would bring those
    events back."""
    return metadata.truncate_before or 0


def check_metadata(metadata: object) -> StreamMetadata:
    """Return ``metadata`` if its limits are sensible: ``TypeError`` for a value of the wrong
    type, ``ValueError`` for one out of range."""
    if not isinstance(metadata, StreamMetadata):
        raise TypeError(f"metadata must be an eskit.StreamMetadata, got {metadata!r:.60}")
    check_optional_count("truncate_before", metadata.truncate_before, minimum=0)
    check_optional_count("max_count", metadata.max_count, minimum=1)
    max_age: object = metadata.max_age
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float)):
        raise TypeError(f"max_age must be a number of seconds, got {max_age!r:.60}")
    if max_age is not None and not (0 < max_age < math.inf):
        raise ValueError(f"max_age must be a positive number of seconds, got {max_age}")
    custom: object = metadata.custom
    if custom is not None:
        if not isinstance(custom, dict):
            raise TypeError(f"custom metadata must be a JSON object (dict), got {custom!r:.60}")
        encoded = _checked_json(custom, "custom metadata", "custom")
        if len(encoded) > DEFAULT_MAX_EVENT_SIZE:
            raise ValueError(
                f"custom metadata is {len(encoded)} bytes of JSON; the limit is"
                f" {DEFAULT_MAX_EVENT_SIZE}"
            )
    return metadata


def check_types(types: Iterable[str] | None) -> tuple[str, ...] | None:
    """Normalise a ``types`` filter: ``TypeError`` unless it is None or an iterable of str
    (a bare string is not: it would filter by its letters)."""
    if types is None:
        return None
    if isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise TypeError(f"types must be a list of event type names, got {types!r:.60}")
    found = tuple(types)
    for name in found:
        if not isinstance(name, str):
            raise TypeError(f"types must hold event type names (str), got {name!r:.60}")
    return found
