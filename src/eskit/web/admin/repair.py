"""What the dashboard knows and does about projections: their rows, rebuilds in the
server's runner, skips.

The stored state is read as ``eskit projections status`` reads it, so projections run by
other processes show too; the server's own runner adds what only it knows (how far a
projection it runs really got, whether its task runs). Rebuilds need the projection's
code, so only the projections of the server's runner can be rebuilt here, in that runner
(beside the live tables; readers keep the old build until the switch). A skip only changes
the stored state: it works for any stuck projection, and its runner, wherever it is,
notices and goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

from eskit.projections import leases
from eskit.projections import state as st
from eskit.projections.database import Database
from eskit.projections.failure import describe, log_failure
from eskit.projections.runner import ProjectionRunner, now
from eskit.projections.status import Status, read_stored, statuses
from eskit.store.base import EventStore
from eskit.web.errors import ApiError

log = logging.getLogger("eskit.web.admin")


@dataclasses.dataclass(frozen=True)
class Row:
    """One projection as the dashboard shows it."""

    name: str
    version: int
    position: int
    lag: int
    status: str
    error: str | None
    error_position: int | None
    error_type: str | None
    rebuild: int | None
    """How far a rebuild in progress (or left unfinished) got."""
    skips: int
    here: bool
    """Run by this server's runner: it can be rebuilt from the page."""
    last_rebuild: dt.datetime | None = None
    """When the last rebuild switched in (wherever it ran)."""
    last_rebuild_events: int | None = None
    last_rebuild_seconds: float | None = None


async def dashboard(
    store: EventStore, runner: ProjectionRunner | None, database: Database | None
) -> tuple[int, list[Row]]:
    """The log's head and every projection's row, by name: those stored in ``database``,
    and those ``runner`` runs (``status.statuses``, as the CLI shows them)."""
    head = await store.written_position()  # the primary's: a replica's lag counts too
    stored = await database.read(read_stored) if database is not None else []
    live = await runner.status() if runner is not None else []
    return head, [_row(status) for status in statuses(head, stored, live)]


def _row(status: Status) -> Row:
    error = status.error
    if status.stuck_partition is not None:  # the page shows one; a skip steps them all
        more = status.stuck_partitions - 1
        others = f" (and {more} more partitions)" if more else ""
        error = f"partition {status.stuck_partition}{others}: {status.error}"
    return Row(
        status.name,
        status.version,
        status.position,
        status.lag,
        status.status,
        error,
        status.error_position,
        status.error_type,
        status.rebuild_position,
        status.skips,
        status.here,
        status.last_rebuild,
        status.last_rebuild_events,
        status.last_rebuild_seconds,
    )


@dataclasses.dataclass
class RebuildJob:
    """A rebuild started from the dashboard, and how it went."""

    name: str
    user: str
    started_at: dt.datetime
    position: int = 0
    head: int = 0
    finished_at: dt.datetime | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def progressed(self, position: int, head: int) -> None:
        self.position, self.head = position, head


def start_rebuild(
    runner: ProjectionRunner | None, jobs: dict[str, RebuildJob], name: str, user: str
) -> RebuildJob:
    """Rebuild ``name`` in ``runner``, in the background, noted in ``jobs``."""
    if runner is None or name not in runner.workers:
        raise ApiError(
            409,
            "NotRunHere",
            f"projection {name} is not run by this server, which lacks its code: rebuild it"
            f" with eskit projections rebuild URL {name} --app module:projections",
        )
    job = jobs.get(name)
    if job is not None and job.running:
        raise ApiError(409, "RebuildRunning", f"projection {name} is being rebuilt already")
    job = jobs[name] = RebuildJob(name, user, dt.datetime.now(dt.UTC))

    async def run() -> None:
        try:
            await runner.rebuild(name, progress=job.progressed)
        except Exception as error:
            job.error = describe(error)
            log_failure(log, "rebuild of %s failed", name, error=error)
        finally:
            job.finished_at = dt.datetime.now(dt.UTC)

    job.task = asyncio.create_task(run(), name=f"eskit admin rebuild {name}")
    return job


async def skip_event(
    runner: ProjectionRunner | None, database: Database | None, name: str, reason: str
) -> list[st.Skip]:
    """Step the stuck projection ``name`` (or each of its stuck partitions) over its
    failing event (its runner or workers, here or in other processes, notice and go on)."""
    if runner is not None and name in runner.workers:
        return [await runner.skip(name, reason)]
    if database is None:
        raise ApiError(409, "NoDatabase", "this server has no projection database")
    return await database.write(lambda c: leases.skip_stuck(c, name, reason, now()))


async def skips(database: Database | None, name: str) -> list[st.Skip]:
    """The events skipped in ``name`` so far."""
    if database is None:
        return []
    return await database.read(lambda c: st.skips(c, name))
