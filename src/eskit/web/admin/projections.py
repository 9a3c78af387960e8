"""The projections dashboard: every projection's checkpoint, lag and status, the error of a
stuck one, a rebuild button and a skip form that asks for the reason (``repair`` does
the work). The page's script refreshes the table every second, so a rebuild's progress
shows as it goes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.cli.common import when
from eskit.projections import state as st
from eskit.web.admin.html import Html, join, link, table, tag, url
from eskit.web.admin.repair import RebuildJob, Row, dashboard, skip_event, skips, start_rebuild
from eskit.web.admin.session import Visitor, post_form, posted, user_page, visitor
from eskit.web.admin.site import HEADERS, admin_of, base, fragment
from eskit.web.errors import ApiError

Name = Annotated[str, Path(min_length=1, max_length=200)]


def add_projection_routes(router: APIRouter) -> None:
    @router.get("/projections")
    async def projections(request: Request) -> Response:
        who = visitor(request)
        root = base(request)
        explained = tag(
            "p",
            "Lag is the number of positions between the log's head and the checkpoint."
            " A stuck projection stops at the event its code fails on: fix the code and"
            " restart, or skip the event. Rebuild replays the log into new tables beside"
            " the live ones and switches when it is done.",
            class_="hint",
        )
        current = tag(
            "div",
            await _table(request, who),
            id="projections",
            data_src=f"{root}/projections/table",
        )
        return user_page(request, who, "Projections", explained, current)

    @router.get("/projections/table")
    async def projections_table(request: Request) -> Response:
        """The dashboard's table alone: the page's script refreshes it every second."""
        return fragment(await _table(request, visitor(request)))

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
        if row.status != st.STUCK:
            message = f"projection {name} is not stuck (status {row.status}): nothing to skip"
            return user_page(request, who, f"Skip in {name}", tag("p", message))
        skipped = await skips(admin.database, name)
        return user_page(
            request, who, f"Skip in {name}", *_skip_content(request, who, row, skipped)
        )

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


async def _table(request: Request, who: Visitor) -> Html:
    admin = admin_of(request)
    if admin.database is None and admin.runner is None:
        return tag("p", "this server runs no projections and has no projection database")
    head, rows = await dashboard(admin.store, admin.runner, admin.database)
    if not rows:
        return tag("p", "no projections have run on this store yet")
    headings = ("name", "version", "position", "lag", "status", "rebuild", "skips", "error", "")
    body = [
        tag(
            "tr",
            *(tag("td", cell) for cell in _cells(request, who, row, head)),
            data_projection=row.name,
            data_status=row.status,
            data_lag=row.lag,
        )
        for row in rows
    ]
    heading = tag("thead", tag("tr", *(tag("th", h) for h in headings)))
    caption = tag("caption", f"head of the log: position {head}")
    return tag("table", caption, heading, tag("tbody", *body), class_="projections")


def _cells(request: Request, who: Visitor, row: Row, head: int) -> list[object]:
    root = base(request)
    error = ""
    if row.error is not None:  # about an event, or (a failed tick) about none
        about = (
            "" if row.error_position is None else f"at {row.error_position} ({row.error_type}): "
        )
        error = tag("span", f"{about}{row.error}", class_="error")
    actions: list[object] = []
    if row.here and row.status != "rebuilding":
        button = tag("button", "Rebuild", class_="rebuild")
        actions.append(post_form(request, who, f"{root}/projections/{row.name}/rebuild", button))
    if row.status == st.STUCK:
        actions.append(link(f"{root}/projections/{row.name}/skip", "Skip…", class_="skip"))
    return [
        row.name,
        row.version,
        row.position,
        row.lag,
        tag("span", row.status, class_=f"status {row.status}"),
        _rebuild(admin_of(request).jobs.get(row.name), row, head),
        row.skips,
        error,
        join(actions),
    ]


def _rebuild(job: RebuildJob | None, row: Row, head: int) -> Html:
    """The rebuild in progress (a bar), or how the last one started here ended."""
    if row.rebuild is not None:
        share = 100 * row.rebuild // head if head else 100
        bar = tag("progress", f"{share}%", value=row.rebuild, max=max(head, 1))
        return join([bar, f" {row.rebuild}/{head} ({share}%)"])
    if job is None:
        return Html("")
    if job.running:
        return tag("span", "starting…")
    if job.error is not None:
        return tag("span", f"failed at {when(job.finished_at)}: {job.error}", class_="error")
    return tag("span", f"rebuilt at {when(job.finished_at)} by {job.user}", class_="done")


def _skip_content(request: Request, who: Visitor, row: Row, skipped: list[st.Skip]) -> list[object]:
    root = base(request)
    stuck = tag(
        "p",
        f"Projection {row.name} is stuck at position {row.error_position} on an event of"
        f" type {row.error_type}:",
    )
    error = tag("pre", row.error or "", class_="error")
    event = link(url(f"{root}/streams", {"type": row.error_type}), "streams with this type")
    form = post_form(
        request,
        who,
        f"{root}/projections/{row.name}/skip",
        tag(
            "label",
            "Why skip it (kept with the skip, with your name)",
            tag(
                "input",
                name="reason",
                required=True,
                size=60,
                placeholder="bad import, ticket OPS-12",
            ),
        ),
        tag("button", "Skip the event", class_="skip"),
        class_="skip",
    )
    warning = tag(
        "p",
        "The projection will never apply this event: its read model then lacks what the"
        " event says. Skip only what must be ignored; fixing the code and restarting (or"
        " rebuilding) is usually better.",
        class_="hint",
    )
    history = ""
    if skipped:
        rows = [(s.position, s.event_type, s.error, s.reason, when(s.skipped_at)) for s in skipped]
        history = join(
            [
                tag("h2", "skipped before"),
                table(("position", "type", "error", "reason", "when"), rows),
            ]
        )
    return [stuck, error, tag("p", event), warning, form, history]
