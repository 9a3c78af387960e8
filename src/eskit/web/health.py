"""``GET /health/live`` and ``GET /health/ready``: is the process up, and may it take traffic
(``eskit.web.readiness`` says when).

Both are open (no token): the probes of load balancers and orchestrators rarely can send
one, and the answers hold no event data, only whether the store answers and how far each
read model is behind (projection names and lags). Not ready answers 503 with the reasons,
so a load balancer sends the requests to another instance meanwhile.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request

from eskit.projections.runner import ProjectionRunner
from eskit.web.context import context
from eskit.web.inputs import only_parameters
from eskit.web.openapi import WHY, add_components, ref, schemas_of
from eskit.web.readiness import Readiness, readiness
from eskit.web.schemas import JSON, ErrorBody, JSONResponse

_LIVE = {
    "type": "object",
    "properties": {"status": {"type": "string", "const": "live"}},
    "required": ["status"],
}


def add_health_routes(app: FastAPI, runner: ProjectionRunner | None, max_lag: int) -> None:
    """Add the two health endpoints (in the OpenAPI document, tagged ``health``);
    ``runner``'s projections are checked for lag."""
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    _, components = schemas_of([Readiness, ErrorBody])
    add_components(app, components)
    invalid = {"description": WHY[422], "content": {JSON: {"schema": ref("ErrorBody")}}}

    @app.get(
        "/health/live",
        tags=["health"],
        operation_id="health_live",
        response_class=JSONResponse,
        responses={200: {"description": "Up", "content": {JSON: {"schema": _LIVE}}}, 422: invalid},
    )
    async def live(request: Request) -> JSONResponse:
        """The process is up and its event loop answers. No token needed."""
        only_parameters(request)
        return JSONResponse({"status": "live"})

    readiness_body = {JSON: {"schema": ref("Readiness")}}

    @app.get(
        "/health/ready",
        tags=["health"],
        operation_id="health_ready",
        response_class=JSONResponse,
        responses={
            200: {"description": "Ready for traffic", "content": readiness_body},
            422: invalid,
            503: {"description": "Not ready: the reasons say why", "content": readiness_body},
        },
    )
    async def ready(request: Request) -> JSONResponse:
        """Whether this instance should get traffic: the store answers and no projection
        lags more than the threshold (503 with the reasons if not). No token needed."""
        only_parameters(request)
        ctx = context(request)
        found = await readiness(ctx.store, runner, max_lag, stopping=ctx.closing.is_set())
        headers = {"Retry-After": "1"} if found.reasons else {}
        return JSONResponse(found, 503 if found.reasons else 200, headers)
