"""Time travel: an aggregate's state at any version, or as it was at a moment, loaded by
the application's own repository (``Repository.load(version=..., at=...)``).

Only the aggregates the application names in ``AppSpec.aggregates`` can be loaded: the
state is built by their code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any, Final

import msgspec
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.repository import Repository
from eskit.errors import AggregateNotFound, EskitError, StoreError, Unavailable
from eskit.store import rules
from eskit.store.model import RecordedEvent
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of
from eskit.web.aggregates import parse_moment, public_state
from eskit.web.errors import ApiError

AROUND: Final = 25
"""Events listed on each side of the version shown."""


def add_aggregate_routes(router: APIRouter) -> None:
    @router.get("/aggregates")
    async def aggregates(
        request: Request,
        kind: Annotated[str, Query(max_length=200)] = "",
        id: Annotated[str, Query(max_length=200)] = "",
        version: Annotated[int | None, Query(ge=0, le=rules.MAX_INT64)] = None,
        at: Annotated[str, Query(max_length=40)] = "",
    ) -> Response:
        """The form, and the state it asks for."""
        who = visitor(request)
        known = list(admin_of(request).aggregates)
        asked = {"kinds": known, "kind": kind, "id": id, "version": version, "at": at}
        shown = None
        if known and kind and id:
            shown = await _state(request, kind, id, version, parse_moment(at or None))
        return user_page(request, who, "aggregates.html", "Time travel", shown=shown, **asked)


@dataclasses.dataclass(frozen=True)
class Shown:
    """An aggregate at a version, or the event it cannot be loaded past, and the events
    around that version."""

    stream: str
    version: int | None
    where: str
    state: object = None
    problem: str | None = None
    history: list[RecordedEvent] = dataclasses.field(default_factory=list)


async def _state(
    request: Request, kind: str, aggregate_id: str, version: int | None, at: dt.datetime | None
) -> Shown:
    repository = admin_of(request).aggregates.get(kind)
    if repository is None:
        raise ApiError(404, "NotFound", f"no aggregate kind {kind!r}")
    stream = repository.stream(aggregate_id)
    rules.check_name(stream)
    try:
        loaded = await repository.load(aggregate_id, version=version, at=at)
    except (StoreError, Unavailable, AggregateNotFound):
        raise
    except Exception as error:  # an event its code cannot decode or apply: say which
        return await _unloadable(repository, aggregate_id, (version, at), error)
    assert loaded.version is not None  # load raises AggregateNotFound for no events
    last = await repository.store.stream_version(stream)
    where = f"at version {loaded.version} of {last}" if last is not None else ""
    history = await _history(repository, aggregate_id, loaded.version)
    return Shown(stream, loaded.version, where, public_state(loaded.state), history=history)


async def _unloadable(
    repository: Repository[Any],
    aggregate_id: str,
    until: tuple[int | None, dt.datetime | None],
    error: Exception,
) -> Shown:
    """An aggregate that does not load: the event it fails on, and why."""
    version, at = until
    stream = repository.stream(aggregate_id)
    failed, error = await _failing_event(repository, stream, version, at, error)
    why = _why(error)
    if failed is None:
        problem = f"The aggregate cannot be loaded: {why}"
    else:
        problem = (
            f"Event v{failed.version} ({failed.type}, position {failed.position}) cannot be"
            f" decoded or applied: {why}"
        )
    shown = version if failed is None else failed.version
    history = await _history(repository, aggregate_id, shown)
    return Shown(stream, shown, "cannot be loaded", problem=problem, history=history)


async def _failing_event(
    repository: Repository[Any],
    stream: str,
    version: int | None,
    at: dt.datetime | None,
    error: Exception,
) -> tuple[RecordedEvent | None, Exception]:
    """Replay the stream as ``load`` does, one event at a time, to find the first it cannot
    decode or apply, and that event's error (the one given if none fails on its own)."""
    model, events = repository.model, repository.events
    state = model.initial_state()
    async for recorded in repository.store.read_stream(stream):
        if (version is not None and recorded.version > version) or (
            at is not None and recorded.recorded_at > at
        ):
            break
        try:
            for event in events.decode(recorded):
                state = model.evolve(state, event)
        except Exception as failed:  # the event found
            return recorded, failed
    return None, error


def _why(error: Exception) -> str:
    """An error as the page may show it: eskit's and the decoder's messages name the type
    and field, never a value; any other error only by its class (its message may quote
    decrypted personal data)."""
    if isinstance(error, EskitError | msgspec.ValidationError):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__} (the message is not shown: it may quote the event's data)"


async def _history(
    repository: Repository[Any], aggregate_id: str, shown: int | None
) -> list[RecordedEvent]:
    """The events around version ``shown`` (the page links each to its version)."""
    stream = repository.stream(aggregate_id)
    start = max(0, (shown or 0) - AROUND)
    reading = repository.store.read_stream(stream, from_version=start, limit=2 * AROUND + 1)
    return [event async for event in reading]
