"""``GET /metrics``: the Prometheus text of the ``eskit.observability.Metrics`` the server
attaches to its store, command bus and projection runner.

It needs the ``read`` scope when the server has tokens: the counters describe the whole
store (every command type, every projection), which is what an unrestricted reader may
see, and Prometheus sends a bearer token easily (``authorization: {credentials_file:
...}`` in its scrape config). prometheus-client and opentelemetry-api are the optional
``eskit[ops]`` dependencies: without them the server runs without ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.commands import CommandBus
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.web.app import bearer
from eskit.web.auth import require
from eskit.web.context import context
from eskit.web.inputs import only_parameters
from eskit.web.openapi import responses

if TYPE_CHECKING:
    from eskit.observability import Metrics

log = logging.getLogger("eskit.web")


OPENMETRICS = "application/openmetrics-text"
_TEXT = "Prometheus text format (OpenMetrics when the Accept header asks for it)"


def server_metrics() -> Metrics | None:
    """New collectors for one server, or None without the ``ops`` extra."""
    try:
        from eskit.observability import Metrics
    except ImportError:  # pragma: no cover - the dev install has it
        log.info("no /metrics: install eskit[ops] (prometheus-client, opentelemetry-api)")
        return None
    return Metrics()


def attach(
    metrics: Metrics,
    *,
    store: EventStore | None = None,
    bus: CommandBus | None = None,
    runner: ProjectionRunner | None = None,
) -> asyncio.Task[None] | None:
    """``eskit.observability.instrument``, imported only when there are metrics."""
    from eskit.observability import instrument

    return instrument(metrics, store=store, runner=runner, bus=bus)


def add_metrics_route(router: APIRouter, metrics: Metrics, secured: bool) -> None:
    """``GET /metrics`` (in the OpenAPI document, tagged ``health``); a token with ``read``
    when ``secured``."""
    from prometheus_client.exposition import choose_encoder

    from eskit.observability.groups import GroupCollector
    from eskit.web.groups import groups_of

    group_metrics = GroupCollector(metrics.registry)

    documented = responses(
        200, {"type": "string"}, secured=secured, media_type="text/plain", description=_TEXT
    )
    documented[200]["content"][OPENMETRICS] = {"schema": {"type": "string"}}

    @router.get(
        "/metrics",
        tags=["health"],
        operation_id="metrics",
        dependencies=[Depends(bearer)] if secured else [],
        responses=documented,
    )
    async def scrape(request: Request) -> Response:
        """Every collector in the format the scraper asks for (Prometheus text, or
        OpenMetrics); the head and the consumer groups' counts are read now, the
        projections' positions and lags are sampled every second."""
        ctx = context(request)
        require(ctx.authenticate(request), "read")
        only_parameters(request)
        head = await ctx.store.written_position()  # the primary's: lags count a replica's
        metrics.head.set(head)
        group_metrics.refresh(await groups_of(request).list(), head)
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), headers={"Content-Type": media_type})
