"""The dashboard, the admin's home: what needs attention first (stuck or failing
projections; consumer groups with parked events), then charts of the
events appended per second over the last hour and of each projection's lag over time, and
the biggest categories and streams (``history`` computes them).

The charts are drawn by uPlot (vendored in ``static/``) from ``/dashboard/data``, a JSON
document the page's script fetches every few seconds: no data is written into the page
for a script to read, so the CSP forbids inline scripts with nothing to except.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from eskit.projections import state as st
from eskit.web.admin.repair import Row, dashboard
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import HEADERS, Admin, admin_of, fragment
from eskit.web.admin.subscriptions import summaries

ATTENTION = (st.STUCK, "failing")
"""The statuses shown at the top of the dashboard."""


def add_dashboard_routes(router: APIRouter) -> None:
    @router.get("/dashboard")
    async def show(request: Request) -> Response:
        who = visitor(request)
        admin = admin_of(request)
        found = await admin.history.biggest_of(admin.store)
        return user_page(
            request, who, "dashboard.html", "Dashboard", biggest=found, **await _attention(admin)
        )

    @router.get("/dashboard/attention")
    async def attention(request: Request) -> Response:
        """The top of the dashboard alone: the page's script refreshes it."""
        visitor(request)
        return fragment(request, "attention.html", **await _attention(admin_of(request)))

    @router.get("/dashboard/data")
    async def data(request: Request) -> Response:
        """The charts' data: events per second by minute over the last hour, and each
        projection's lag at each sample (times in seconds since 1970)."""
        visitor(request)
        admin = admin_of(request)
        counted = await admin.history.counted(admin.store)
        now = time.time()
        minutes, rates = counted.series(now)
        rows = await _rows(admin)
        if rows is not None:
            admin.history.note_lags({row.name: row.lag for row in rows}, now)
        times, lags = admin.history.lag_series()
        body = {
            "throughput": {
                "times": minutes,
                "rates": rates,
                "total": counted.total,
                "since": counted.since,
            },
            "lag": {"times": times, "series": lags},
            "head": counted.counted_to,
        }
        return Response(msgspec.json.encode(body), media_type="application/json", headers=HEADERS)


async def _rows(admin: Admin) -> list[Row] | None:
    """Every projection's row (None: this server has no projections to show)."""
    if admin.database is None and admin.runner is None:
        return None
    _, rows = await dashboard(admin.store, admin.runner, admin.database)
    return rows


async def _parked(admin: Admin) -> list[dict[str, Any]] | None:
    """The consumer groups with parked events (None: there are no groups to show)."""
    rows = await summaries(admin)
    if not rows:
        return None
    return [row for row in rows if row["group"].parked]


async def _attention(admin: Admin) -> dict[str, Any]:
    rows = await _rows(admin)
    return {
        "rows": rows,
        "troubled": [row for row in rows or [] if row.status in ATTENTION],
        "parked": await _parked(admin),
    }
