"""The projections dashboard: every projection's checkpoint, lag and status, the error of a
stuck one, a rebuild button and a skip form that asks for the reason (``repair`` does
the work). The page's script refreshes the table every second, so a rebuild's progress
shows as it goes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.cli.common import when
from eskit.projections import state as st
from eskit.web.admin.repair import RebuildJob, Row, dashboard, skip_event, skips, start_rebuild
from eskit.web.admin.session import csrf_token, posted, user_page, visitor
from eskit.web.admin.site import HEADERS, admin_of, base, fragment
from eskit.web.errors import ApiError

Name = Annotated[str, Path(min_length=1, max_length=200)]


def add_projection_routes(router: APIRouter) -> None:
    @router.get("/projections")
    async def projections(request: Request) -> Response:
        who = visitor(request)
        shown = await _table(request)
        return user_page(request, who, "projections.html", "Projections", **shown)

    @router.get("/projections/table")
    async def projections_table(request: Request) -> Response:
        """The dashboard's table alone: the page's script refreshes it every second."""
        who = visitor(request)
        csrf = csrf_token(admin_of(request), who)
        return fragment(request, "projections_table.html", csrf=csrf, **await _table(request))

    @router.post("/projections/{name}/rebuild")
    async def rebuild(request: Request, name: Name) -> Response:
        who = visitor(request)
        await posted(request, who)
        admin = admin_of(request)
        start_rebuild(admin.runner, admin.jobs, name, who.name)
        return RedirectResponse(f"{base(request)}/projections", 303, headers=HEADERS)

    @router.get("/projections/{name}/skip")
    async def skip_form(request: Request, name: Name) -> Response:
        who = visitor(request)
        admin = admin_of(request)
        _, rows = await dashboard(admin.store, admin.runner, admin.database)
        row = next((r for r in rows if r.name == name), None)
        if row is None:
            raise ApiError(404, "NotFound", f"no projection named {name!r}")
        skipped = await skips(admin.database, name) if row.status == st.STUCK else []
        title = f"Skip in {name}"
        return user_page(request, who, "skip.html", title, row=row, skipped=skipped)

    @router.post("/projections/{name}/skip")
    async def skip(request: Request, name: Name) -> Response:
        who = visitor(request)
        fields = await posted(request, who)
        reason = fields.get("reason", "").strip()
        if not reason:
            raise ApiError(422, "ValidationError", "say why the event is skipped (the reason)")
        admin = admin_of(request)
        why = f"{reason} (by {who.name}, admin UI)"
        await skip_event(admin.runner, admin.database, name, why)
        return RedirectResponse(f"{base(request)}/projections", 303, headers=HEADERS)


async def _table(request: Request) -> dict[str, Any]:
    """What the table shows: the log's head, the rows and the rebuilds started here (no
    rows and ``runs`` False: this server has no projections to show)."""
    admin = admin_of(request)
    if admin.database is None and admin.runner is None:
        return {"runs": False, "head": 0, "rows": [], "rebuilds": {}}
    head, rows = await dashboard(admin.store, admin.runner, admin.database)
    rebuilds = {row.name: _rebuild(admin.jobs.get(row.name), row, head) for row in rows}
    return {"runs": True, "head": head, "rows": rows, "rebuilds": rebuilds}


def _rebuild(job: RebuildJob | None, row: Row, head: int) -> dict[str, Any] | None:
    """The rebuild in progress (a bar), or how the last one started here ended."""
    if row.rebuild is not None:
        share = 100 * row.rebuild // head if head else 100
        return {"position": row.rebuild, "head": head, "share": share}
    if job is None:
        return None
    if job.running:
        return {"note": "starting…", "class": ""}
    if job.error is not None:
        return {"note": f"failed at {when(job.finished_at)}: {job.error}", "class": "error"}
    return {"note": f"rebuilt at {when(job.finished_at)} by {job.user}", "class": "done"}
