"""One status model: how every projection is doing, computed once for every screen.

``eskit projections status``, the admin dashboard and ``/health/ready`` all render what
``statuses`` computes: from the stored state (``read_stored``: rows, rebuilds, skips,
partitions), which shows projections run anywhere, and from a runner's live view, which
knows how far the projections it runs really got and whether they run. A partitioned
projection's checkpoint is its slowest partition's; when partitions are stuck, the one
shown is the one stuck earliest in the log (the lowest ``error_position``): the event an
operator looks at first, whatever order the partitions are numbered in. A broker
consumer group whose read model is in the database read shows as a projection too.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from eskit.projections import leases
from eskit.projections import state as st
from eskit.projections.consumers import stuck as consumer_stuck
from eskit.projections.consumers.base import GENERATION
from eskit.projections.sql import Connection
from eskit.projections.worker import ProjectionStatus


class Stored(msgspec.Struct, frozen=True):
    """A projection as stored: its row, its rebuild in progress, skips, partitions."""

    state: st.State
    rebuild: st.Rebuild | None
    skips: int
    partitions: list[leases.PartitionRow]


def read_stored(conn: Connection) -> list[Stored]:
    """Every stored projection, by name (in the caller's read transaction), and every
    broker consumer group whose read model is in this database (``of_group``)."""
    return [
        Stored(state, rebuild, len(st.skips(conn, state.name)), leases.partitions(conn, state.name))
        for state, rebuild in st.load_all(conn)
    ] + [of_group(group, len(st.skips(conn, group.name))) for group in consumer_stuck.groups(conn)]


def of_group(group: consumer_stuck.Group, skips: int) -> Stored:
    """A broker consumer group as a stored projection: its position is the newest event it
    recorded, its partitions the stuck ones (the broker knows the others)."""
    state = st.State(
        group.name, group.version, GENERATION, group.position, group.tables, st.RUNNING
    )
    stuck = [
        leases.PartitionRow(
            p.partition,
            group.position,
            None,
            GENERATION,
            0,
            p.error,
            p.position,
            p.event_id,
            p.event_type,
        )
        for p in group.stuck
    ]
    return Stored(state, None, skips, stuck)


class Status(msgspec.Struct, frozen=True):
    """A projection's (or its partitioned workers') status, as every screen shows it."""

    name: str
    version: int
    position: int
    """The checkpoint: the slowest partition's, for a partitioned projection."""
    head: int
    status: str  # starting | running | failing | stuck | rebuilding | stopped
    error: str | None = None
    error_position: int | None = None
    error_type: str | None = None
    error_event: str | None = None
    rebuild_position: int | None = None
    """How far a rebuild in progress (or left unfinished) got."""
    rebuild_version: int | None = None
    skips: int = 0
    partitions: int = 0
    owners: int = 0
    """Workers holding the partitions now."""
    stuck_partition: int | None = None
    """The partition stuck earliest in the log, if any is."""
    stuck_partitions: int = 0
    updated_at: int = 0
    here: bool = False
    """Run by the runner that was asked (``live``)."""

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


def of_stored(stored: Stored, head: int) -> Status:
    """The status the stored state says."""
    state, rebuild = stored.state, stored.rebuild
    status = Status(
        state.name,
        state.version,
        state.position,
        head,
        st.shown_status(state),
        state.error,
        state.error_position,
        state.error_type,
        state.error_event,
        None if rebuild is None else rebuild.position,
        None if rebuild is None else rebuild.version,
        stored.skips,
        len(stored.partitions),
        len({p.owner for p in stored.partitions if p.owner is not None}),
        updated_at=state.updated_at,
    )
    if not stored.partitions:
        return status
    position = min(p.position for p in stored.partitions)
    stuck = [p for p in stored.partitions if p.stuck]
    if not stuck:
        return msgspec.structs.replace(status, position=position)
    first = min(stuck, key=lambda p: (p.error_position or 0, p.partition))
    return msgspec.structs.replace(
        status,
        position=position,
        status=st.STUCK,
        error=first.error,
        error_position=first.error_position,
        error_type=first.error_type,
        error_event=first.error_event,
        stuck_partition=first.partition,
        stuck_partitions=len(stuck),
    )


def of_live(live: ProjectionStatus, stored: Status | None) -> Status:
    """The status a runner that runs the projection sees (what it alone knows wins)."""
    rebuild, version = live.rebuild_position, None
    if rebuild is None and stored is not None:
        rebuild, version = stored.rebuild_position, stored.rebuild_version
    return Status(
        live.name,
        live.version,
        live.position,
        live.head,
        live.status,
        live.error,
        live.error_position,
        live.error_type,
        live.error_event,
        rebuild,
        version,
        stored.skips if stored is not None else 0,
        updated_at=stored.updated_at if stored is not None else 0,
        here=True,
    )


def statuses(
    head: int, stored: Sequence[Stored], live: Sequence[ProjectionStatus] = ()
) -> list[Status]:
    """Every projection's status, by name: those stored, and those a runner runs."""
    found = {s.state.name: of_stored(s, head) for s in stored}
    for status in live:
        found[status.name] = of_live(status, found.get(status.name))
    return [found[name] for name in sorted(found)]
