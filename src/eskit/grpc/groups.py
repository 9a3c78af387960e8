"""KurrentDB's persistent subscription requests to eskit's consumer groups and back:
the group's source, where it starts, its settings and the info answer.

A KurrentDB group is named by its stream and its name; an eskit group by its name alone.
The name is the group's, and the stream must be the group's source: the same name on two
streams is refused ``ALREADY_EXISTS``, and asked on another stream it is ``NOT_FOUND``.

Settings that map:

- ``message_timeout`` (ms or ticks; 0: KurrentDB's 30 s) is ``Settings.message_timeout``;
- ``max_retry_count`` is ``Settings.max_retries``;
- ``consumer_strategy``: ``RoundRobin`` and ``DispatchToSingle`` are ``round_robin``,
  ``Pinned`` is ``pinned`` (by stream); ``PinnedByCorrelation`` is refused.

Retries are handed out again at once, as KurrentDB does (``retry_backoff`` 0). Ignored, as
eskit has no such buffers or links: ``live_buffer_size``, ``read_batch_size``,
``history_buffer_size``, ``min/max_checkpoint_count`` and ``checkpoint_after`` (eskit
checkpoints at every ack), ``max_subscriber_count``, ``extra_statistics``,
``resolve_links``; the info answer gives them as 0. An update changes the settings only:
its start position is ignored (the group keeps its checkpoint).
"""

from __future__ import annotations

import re
from typing import Any, Final

import grpc

from eskit.grpc.errors import Refused, invalid
from eskit.grpc.filters import event_filter
from eskit.grpc.mapping import stream_name
from eskit.grpc.protos import persistent_pb2
from eskit.store.base import EventStore
from eskit.subscriptions import END, START, Group, Settings, Source
from eskit.subscriptions.model import Start, Strategy

DEFAULT_TIMEOUT_MS: Final = 30_000
TICKS_PER_MS: Final = 10_000
STRATEGIES: Final[dict[str, Strategy]] = {
    "RoundRobin": "round_robin",
    "DispatchToSingle": "round_robin",
    "Pinned": "pinned",
}
LAST_REVISION: Final = (1 << 64) - 1
"""The revision the older create form names for "from the end"."""
NAMED: Final = {0: "DispatchToSingle", 1: "RoundRobin", 2: "Pinned"}
"""The deprecated ``named_consumer_strategy`` enum (updates still send it)."""
SHOWN: Final = {"round_robin": "RoundRobin", "pinned": "Pinned"}
CATEGORY_REGEX = re.compile(r"\^?(?P<category>[\w]+)-(?:\.\*)?\$?")
"""A stream-name filter that is one category: ``^order-.*$`` (kurrentdbclient's form)."""
SYSTEM_EXCLUDED: Final = frozenset({r"^(?!(\$.+$|PersistentConfig\d+$|Result$))", r"^(?!(\$.+$))"})
"""Event-type filters that leave out KurrentDB's system events (kurrentdbclient sends the
first by default): eskit has none, so a group with one reads all of ``$all``. (An eskit event
type ``Result`` or ``PersistentConfig1`` is not left out: a difference.)"""


def not_found(name: str, source: str) -> Refused:
    return Refused(
        grpc.StatusCode.NOT_FOUND,
        f"Subscription group '{name}' on stream '{source}' does not exist.",
    )


def exists(name: str, source: str) -> Refused:
    return Refused(
        grpc.StatusCode.ALREADY_EXISTS,
        f"Subscription group {name} on stream {source} exists already"
        " (eskit group names are unique across streams)",
    )


def named_source(options: Any, field: str = "stream_identifier") -> Source:
    """The source an options message with a ``stream_option`` one-of names."""
    if options.WhichOneof("stream_option") == "all":
        return Source.all()
    return Source.parse(stream_name(getattr(options, field)))


def settings_of(settings: Any, create: bool) -> Settings:
    """eskit's settings of KurrentDB's (``CreateReq.Settings`` / ``UpdateReq.Settings``)."""
    if settings.message_timeout_ms:
        timeout_ms = settings.message_timeout_ms
    elif settings.message_timeout_ticks:
        timeout_ms = settings.message_timeout_ticks // TICKS_PER_MS
    else:
        timeout_ms = DEFAULT_TIMEOUT_MS
    text = getattr(settings, "consumer_strategy", "") if create else ""
    strategy = text or NAMED.get(settings.named_consumer_strategy, "")
    if strategy not in STRATEGIES:
        raise invalid(
            f"consumer strategy {strategy!r} is not served: eskit's groups are RoundRobin"
            " (also for DispatchToSingle) or Pinned (by stream)"
        )
    if settings.max_retry_count < 0 or timeout_ms <= 0:
        raise invalid("max_retry_count must be 0 or more and message_timeout more than 0")
    return Settings(
        message_timeout=timeout_ms / 1000,
        max_retries=settings.max_retry_count,
        strategy=STRATEGIES[strategy],
        retry_backoff=0.0,
    )


async def created(store: EventStore, options: Any) -> tuple[Source, Start]:
    """The source and start of a ``CreateReq.Options``."""
    which = options.WhichOneof("stream_option")
    if which == "all":
        given = options.all
        source = _filtered(given)
        where = given.WhichOneof("all_option")
        if where == "position":
            return source, max(given.position.commit_position - 1, 0)
        return source, END if where == "end" else START
    if which == "stream":
        given = options.stream
        source = Source.parse(stream_name(given.stream_identifier))
        where = given.WhichOneof("revision_option")
        revision = given.revision
    elif options.HasField("stream_identifier"):  # the older form (Node.js still sends it):
        source = Source.parse(stream_name(options.stream_identifier))  # revision in settings
        revision = options.settings.revision
        where = "end" if revision == LAST_REVISION else "revision"
    else:
        raise invalid("a persistent subscription needs a stream or $all")
    if where == "end":
        return source, END
    if where != "revision" or revision == 0:
        return source, START
    if source.kind == "category":  # $ce- revisions are positions (as in reads)
        return source, revision - 1
    return source, await _after_version(store, source.name, revision - 1)


async def _after_version(store: EventStore, stream: str, version: int) -> Start:
    """The position of ``stream``'s event ``version`` (the group starts after it); the end
    of the log if the stream has no such event yet."""
    async for event in store.read_stream(stream, from_version=version, limit=1):
        if event.version == version:
            return event.position
    return END


def _filtered(options: Any) -> Source:
    """A ``$all`` group's source: ``$all``, one category when the filter is one (the
    store then reads only that category), else ``$all`` with the filter."""
    if options.WhichOneof("filter_option") != "filter":
        return Source.all()
    given = options.filter
    which = given.WhichOneof("filter")
    if which == "event_type" and given.event_type.regex in SYSTEM_EXCLUDED:
        return Source.all()
    if which == "stream_identifier":
        expression = given.stream_identifier
        prefixes = list(expression.prefix)
        if len(prefixes) == 1 and prefixes[0].endswith("-") and not expression.regex:
            return Source.category(prefixes[0][:-1])
        match = CATEGORY_REGEX.fullmatch(expression.regex) if not prefixes else None
        if match is not None:
            return Source.category(match["category"])
    return Source.all(event_filter(given))


def info(group: Group, source: Source | None = None) -> Any:
    """KurrentDB's ``SubscriptionInfo`` of ``group`` (asked of ``source``: ``$all`` for a
    group over ``$all`` filtered to one category). eskit keeps no start once the group is
    made: ``start_from`` says "start" (an update's start is ignored anyway)."""
    settings = group.settings
    shown = "$all" if (source or group.source).kind == "all" else str(group.source)
    return persistent_pb2.SubscriptionInfo(
        event_source=shown,
        start_from="C:0/P:0" if shown == "$all" else "0",
        group_name=group.name,
        status="Live",
        last_checkpointed_event_position=str(group.checkpoint),
        last_known_event_position=str(group.read_position),
        message_timeout_milliseconds=round(settings.message_timeout * 1000),
        max_retry_count=settings.max_retries,
        total_in_flight_messages=group.in_flight,
        outstanding_messages_count=group.waiting,
        named_consumer_strategy=SHOWN[settings.strategy],
        parked_message_count=group.parked,
        connections=[
            persistent_pb2.SubscriptionInfo.ConnectionInfo(connection_name=name, username=name)
            for name in group.consumers
        ],
    )
