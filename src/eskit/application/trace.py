"""Follow one correlation id through the log: which commands ran, which events they wrote,
and which events caused further commands (process managers, reactions).

The command bus stamps every event with ``correlation_id`` (shared by a whole chain),
``causation_id`` (the command id, or the id of the event that caused the command),
``command`` (its type) and ``command_id``. ``trace`` scans the log for the correlation id
and rebuilds the chain as a tree: commands hold the events they wrote, and an event holds
the commands it caused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent

Progress = Callable[[int, int], None]
"""Called with (position scanned, head) as the scan advances."""


@dataclasses.dataclass
class TraceEvent:
    """An event of the chain and what it caused."""

    id: str
    stream: str
    version: int
    type: str
    position: int
    recorded_at: dt.datetime
    causation_id: str | None
    caused: list[TraceCommand | TraceEvent] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TraceCommand:
    """A command of the chain (known by the events it wrote) and those events."""

    id: str
    type: str
    causation_id: str | None
    events: list[TraceEvent] = dataclasses.field(default_factory=list)

    @property
    def position(self) -> int:
        """Where its first event sits in the log."""
        return self.events[0].position


@dataclasses.dataclass
class Trace:
    """The chain of one correlation id: its roots (commands or events nobody in the chain
    caused), in log order."""

    correlation_id: str
    roots: list[TraceCommand | TraceEvent]
    count: int
    """Events found."""


async def trace(store: EventStore, correlation_id: str, progress: Progress | None = None) -> Trace:
    """Scan the log up to its current head, page by page, for events with this
    ``correlation_id`` and build their causal tree.

    Only the matching events are kept, so memory is bounded by the chain, not the log. A
    cause is looked up among the chain's events and commands; one outside the chain (an
    HTTP request id, say) leaves its command a root. Causes must come before their effects
    in the log, so damaged metadata cannot make a cycle.
    """
    head = await store.last_position()
    found: list[RecordedEvent] = []
    after = 0
    while after < head:
        page = await store.read_page(after=after, limit=store.page_size)
        found += [
            e
            for e in page.events
            if e.position <= head and _text(e.metadata.get("correlation_id")) == correlation_id
        ]
        if not page.events:
            break
        after = page.next_after
        if progress is not None:
            progress(min(after, head), head)
    return Trace(correlation_id, _tree(found), len(found))


def _tree(found: list[RecordedEvent]) -> list[TraceCommand | TraceEvent]:
    events: dict[str, TraceEvent] = {}
    commands: dict[str, TraceCommand] = {}
    nodes: list[TraceCommand | TraceEvent] = []  # in log order of their first event
    for recorded in found:
        metadata = recorded.metadata
        causation = _text(metadata.get("causation_id"))
        event = TraceEvent(
            str(recorded.id),
            recorded.stream,
            recorded.version,
            recorded.type,
            recorded.position,
            recorded.recorded_at,
            causation,
        )
        events[event.id] = event
        command_id = _text(metadata.get("command_id"))
        if command_id is None:
            nodes.append(event)
            continue
        command = commands.get(command_id)
        if command is None:
            command_type = _text(metadata.get("command")) or "command"
            command = commands[command_id] = TraceCommand(command_id, command_type, causation)
            nodes.append(command)
        command.events.append(event)
    roots: list[TraceCommand | TraceEvent] = []
    for node in nodes:
        parent = _cause(node, events, commands)
        if parent is None:
            roots.append(node)
        elif isinstance(parent, TraceEvent):
            parent.caused.append(node)
        else:
            assert isinstance(node, TraceEvent)
            parent.events.append(node)  # an event written in a command's name, outside it
    return roots


def _cause(
    node: TraceCommand | TraceEvent,
    events: dict[str, TraceEvent],
    commands: dict[str, TraceCommand],
) -> TraceEvent | TraceCommand | None:
    """The node's cause within the chain, if it came earlier in the log."""
    if node.causation_id is None or node.causation_id == node.id:
        return None
    event = events.get(node.causation_id)
    if event is not None and event.position < node.position:
        return event
    command = commands.get(node.causation_id)
    if isinstance(node, TraceEvent) and command is not None and command.position < node.position:
        return command
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
