"""The consumer groups' pages: each group's lag, in-flight, waiting and parked counts and
live consumers; a group's parked events with their reasons (a page at a time) and a replay
button (all, or up to a parked entry), recorded with the admin's name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.subscriptions import Group, GroupNotFound, Groups
from eskit.subscriptions.groups import shared_database
from eskit.web.admin.session import posted, user_page, visitor
from eskit.web.admin.site import HEADERS, Admin, admin_of, base
from eskit.web.errors import ApiError

Name = Annotated[str, Path(min_length=1, max_length=200)]
PAGE = 100


def groups_of(admin: Admin) -> Groups | None:
    """The store's groups (None: the store offers no database to keep them in)."""
    try:
        return Groups(admin.store, shared_database(admin.store, admin.store.read_model_database))
    except (ValueError, TypeError):
        return None


def described(group: Group) -> str:
    """The group's source, and its filter if it has one: what the group receives."""
    source = group.source
    return str(source) if source.filter is None else f"{source} ({source.filter})"


async def summaries(admin: Admin) -> list[dict[str, Any]] | None:
    """Each group with its lag (None: no database for groups)."""
    groups = groups_of(admin)
    if groups is None:
        return None
    head = await admin.store.written_position()  # the primary's, not a replica's
    return [
        {"group": g, "lag": max(0, head - g.checkpoint), "source": described(g)}
        for g in await groups.list()
    ]


def add_subscription_routes(router: APIRouter) -> None:
    @router.get("/subscriptions")
    async def subscriptions(request: Request) -> Response:
        who = visitor(request)
        shown = await summaries(admin_of(request))
        return user_page(request, who, "subscriptions.html", "Subscriptions", rows=shown)

    @router.get("/subscriptions/{name}")
    async def group(request: Request, name: Name, after: int = 0) -> Response:
        who = visitor(request)
        groups = groups_of(admin_of(request))
        if groups is None:
            raise ApiError(404, "NotFound", "this store keeps no consumer groups")
        try:
            found = await groups.get(name)
            parked = await groups.parked(name, after=max(0, after), limit=PAGE)
            replays = await groups.replays(name)
        except GroupNotFound as error:
            raise ApiError(404, "NotFound", str(error)) from None
        following = parked[-1].seq if len(parked) == PAGE else None
        title = f"Group {name}"
        return user_page(
            request,
            who,
            "group.html",
            title,
            group=found,
            source=described(found),
            lag=max(0, await admin_of(request).store.written_position() - found.checkpoint),
            parked=parked,
            following=following,
            replays=replays[-10:][::-1],
        )

    @router.post("/subscriptions/{name}/replay")
    async def replay(request: Request, name: Name) -> Response:
        who = visitor(request)
        fields = await posted(request, who)
        up_to_text = fields.get("up_to", "").strip()
        if up_to_text and not up_to_text.isdigit():
            raise ApiError(
                422, "ValidationError", "up to: a parked entry's number, or empty for all"
            )
        groups = groups_of(admin_of(request))
        if groups is None:
            raise ApiError(404, "NotFound", "this store keeps no consumer groups")
        try:
            await groups.replay(
                name,
                requested_by=f"{who.name} (admin UI)",
                up_to=int(up_to_text) if up_to_text else None,
            )
        except GroupNotFound as error:
            raise ApiError(404, "NotFound", str(error)) from None
        return RedirectResponse(f"{base(request)}/subscriptions/{name}", 303, headers=HEADERS)
