"""``eskit trace``: the causal tree of one correlation id."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text
from rich.tree import Tree

from eskit.application.trace import Trace, TraceCommand, TraceEvent, trace
from eskit.cli.common import Url, fail, opened, out, progress_bar, run, when
from eskit.store.transfer import Progress


def trace_command(
    url: Url,
    correlation_id: Annotated[
        str, typer.Argument(help="The correlation id (metadata correlation_id of the events).")
    ],
) -> None:
    """Show which commands and events one correlation id led to, as a tree of causes.

    Example: eskit trace sqlite:///./events.db 0f9a2c1e-8d4b-4e57-9a43-1b2c3d4e5f60
    """
    with progress_bar("scanning the log") as bar:
        found = run(_trace(url, correlation_id, bar))
    if not found.count:
        fail(f"no events with correlation id {correlation_id!r} in {url}")
    out().print(render(found))


async def _trace(url: str, correlation_id: str, progress: Progress) -> Trace:
    async with opened(url, readonly=True) as store:
        return await trace(store, correlation_id, progress)


def render(found: Trace) -> Tree:
    """The trace as a rich tree: commands in bold, events under them."""
    events = "event" if found.count == 1 else "events"
    root = Tree(Text(f"correlation {found.correlation_id} · {found.count} {events}"))
    for node in found.roots:
        _add(root, node)
    return root


def _add(parent: Tree, node: TraceCommand | TraceEvent) -> None:
    if isinstance(node, TraceCommand):
        branch = parent.add(
            Text.assemble((node.type, "bold magenta"), (f"  command {node.id}", "dim"))
        )
        for event in node.events:
            _add(branch, event)
        return
    branch = parent.add(
        Text.assemble(
            (f"#{node.position} ", "dim"),
            (f"{node.stream} v{node.version} ", "cyan"),
            (node.type, "bold"),
            (f"  {when(node.recorded_at)}", "dim"),
        )
    )
    for caused in node.caused:
        _add(branch, caused)
