"""``GET /aggregates/{kind}/{id}``: time travel over HTTP, an aggregate's state now, at a
version, or as it was at a moment, loaded by the application's own repository
(``Repository.load(version=..., at=...)``), as the admin UI's time-travel page shows it.

Only the aggregates the application names (``AppSpec.aggregates``) can be loaded: their
code builds the state. Reading one needs the ``read`` scope on its stream's category, as
reading its stream does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query
from starlette.requests import Request

from eskit.application.repository import Repository
from eskit.domain.aggregate import Aggregate
from eskit.store import rules
from eskit.web.auth import require, require_some
from eskit.web.context import context
from eskit.web.errors import ApiError
from eskit.web.inputs import only_parameters
from eskit.web.openapi import responses
from eskit.web.schemas import JSONResponse


class AggregateState(msgspec.Struct, frozen=True):
    """An aggregate as it was at ``version`` (its stream's version of the last event
    applied), of ``last_version`` today. ``state``: the aggregate object's public
    attributes, or the decider's state, as JSON."""

    kind: str
    id: str
    stream: str
    version: int
    last_version: int
    state: Any


def add_aggregate_routes(
    router: APIRouter, aggregates: Mapping[str, Repository[Any]], secured: Sequence[Any]
) -> None:
    kinds = ", ".join(sorted(aggregates)) or "none"

    @router.get(
        "/aggregates/{kind}/{aggregate_id}",
        tags=["aggregates"],
        operation_id="load_aggregate",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "AggregateState", 404, secured=bool(secured)),
    )
    async def load_aggregate(
        request: Request,
        kind: str,
        aggregate_id: str,
        version: Annotated[
            int | None,
            Query(ge=0, le=rules.MAX_INT64, description="The version to load (default: now)."),
        ] = None,
        at: Annotated[
            str | None,
            Query(
                max_length=40,
                description="Load it as it was at this moment: an ISO 8601 date and time"
                " (UTC unless it gives an offset), e.g. 2024-05-01T09:00:00Z. With `version`"
                " too, the earlier of both.",
            ),
        ] = None,
    ) -> JSONResponse:
        """The aggregate's state now, at ``version``, or as it was at ``at``; 404 when it
        had no events by then, or has no such version."""
        ctx = context(request)
        grant = ctx.authenticate(request)
        only_parameters(request, "version", "at")
        require_some(grant, "read")
        repository = aggregates.get(kind)
        if repository is None:
            raise ApiError(404, "NotFound", f"no aggregate kind {kind!r}; known: {kinds}")
        stream = rules.check_name(repository.stream(aggregate_id))
        require(grant, "read", rules.category(stream))
        moment = parse_moment(at)
        last = await repository.store.stream_version(stream)
        if version is not None and last is not None and version > last:
            raise ApiError(
                404, "NotFound", f"{stream} has no version {version}: its last is {last}"
            )
        loaded = await repository.load(aggregate_id, version=version, at=moment)
        assert loaded.version is not None  # load raises when there is none
        assert last is not None
        body = AggregateState(
            kind, aggregate_id, stream, loaded.version, last, public_state(loaded.state)
        )
        return JSONResponse(body)


def public_state(state: object) -> object:
    """What to show of a state: an aggregate object's public attributes, else the state
    itself (a Struct or dataclass). (The admin UI's time-travel page shows the same.)"""
    if isinstance(state, Aggregate):
        return {k: v for k, v in vars(state).items() if not k.startswith("_")}
    return state


def parse_moment(text: str | None) -> dt.datetime | None:
    """An ISO 8601 moment, UTC unless it gives an offset; 422 saying what is wrong."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422,
            "ValidationError",
            f"at: not an ISO 8601 date and time (e.g. 2024-05-01T09:00:00Z): {text!r}",
        ) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=dt.UTC)
