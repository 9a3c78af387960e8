"""``GET /health/live`` and ``GET /health/ready``: is the process up, and may it take traffic
(``eskit.web.readiness`` says when).

Both are open (no token): the probes of load balancers and orchestrators rarely can send
one, and the answers hold no event data, only whether the store answers and how far each
read model is behind (projection names and lags). Not ready answers 503 with the reasons,
so a load balancer sends the requests to another instance meanwhile.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from eskit.projections.runner import ProjectionRunner
from eskit.web.context import context
from eskit.web.readiness import readiness
from eskit.web.schemas import JSONResponse


def add_health_routes(router: APIRouter, runner: ProjectionRunner | None, max_lag: int) -> None:
    """Add the two health endpoints; ``runner``'s projections are checked for lag."""
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")

    @router.get("/health/live", include_in_schema=False)
    async def live() -> JSONResponse:
        """The process is up and its event loop answers."""
        return JSONResponse({"status": "live"})

    @router.get("/health/ready", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        """Whether this instance should get traffic (503 with the reasons if not)."""
        ctx = context(request)
        found = await readiness(ctx.store, runner, max_lag, stopping=ctx.closing.is_set())
        headers = {"Retry-After": "1"} if found.reasons else {}
        return JSONResponse(found, 503 if found.reasons else 200, headers)
