"""``POST /commands/{CommandName}``: one operation per command the bus handles, its body the
command as JSON (schema from msgspec), its answer what the command appended.

Every command is sent with a command id: the client's ``Command-Id`` header, or a new one
that the answer returns. Sending the same command again with that id replays the original
result instead of running it twice, so a client that lost an answer may simply retry.
The events' metadata names the token that sent the command (``user``).
"""

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header
from starlette.requests import Request

from eskit.application.commands import CommandBus, CommandResult, command_event_id
from eskit.store import rules
from eskit.web.auth import USER, require, require_some
from eskit.web.context import context
from eskit.web.errors import ApiError
from eskit.web.inputs import json_body, only_parameters
from eskit.web.openapi import request_body, responses, schemas_of
from eskit.web.schemas import CommandReply, EventRef, JSONResponse


def add_command_routes(
    router: APIRouter, bus: CommandBus, secured: Sequence[Any]
) -> dict[str, Any]:
    """Add a route per command type of ``bus``; return the schemas of their bodies."""
    by_name: dict[str, type[Any]] = {}
    for kind in bus.command_types:
        if kind.__name__ in by_name:
            raise ValueError(f"two commands are called {kind.__name__}: rename one")
        by_name[kind.__name__] = kind
    _, components = schemas_of(by_name.values())
    for name, kind in by_name.items():
        router.add_api_route(
            f"/commands/{name}",
            _endpoint(bus, kind),
            methods=["POST"],
            tags=["commands"],
            operation_id=f"command_{name}",
            summary=f"Send {name}",
            description=(kind.__doc__ or "").strip() or None,
            dependencies=list(secured),
            response_class=JSONResponse,
            responses=responses(
                200, "CommandReply", 400, 404, 409, 410, 413, 415, secured=bool(secured)
            ),
            openapi_extra={"requestBody": request_body(name)},
        )

    async def unknown_command(request: Request, name: str) -> JSONResponse:
        context(request).authenticate(request)
        known = ", ".join(by_name) or "none"
        raise ApiError(404, "UnknownCommand", f"no command {name[:100]!r}; known: {known}")

    router.add_api_route(
        "/commands/{name}", unknown_command, methods=["POST"], include_in_schema=False
    )
    return components


def _endpoint(bus: CommandBus, kind: type[Any]) -> Any:
    """The endpoint sending commands of ``kind``."""

    async def send(
        request: Request,
        command_id: Annotated[
            uuid.UUID | None,
            Header(
                alias="Command-Id",
                description="A UUID naming this command: sent again, the command is not run"
                " twice and the answer is its original result.",
            ),
        ] = None,
        correlation_id: Annotated[
            str | None,
            Header(
                alias="Correlation-Id",
                max_length=200,
                description="Stamped on the events (default: the command id).",
            ),
        ] = None,
    ) -> JSONResponse:
        ctx = context(request)
        grant = ctx.authenticate(request)
        require_some(grant, "write")
        only_parameters(request)
        command = await json_body(request, kind, max_nesting=rules.MAX_NESTING)
        require(grant, "write", rules.category(bus.stream_of(command)))
        the_id = command_id or uuid.uuid4()
        result = await bus.send(
            command,
            command_id=the_id,
            correlation_id=correlation_id,
            metadata={USER: grant.name},  # who did it, for the audit view
        )
        return JSONResponse(reply(bus, result, the_id))

    return send


def reply(bus: CommandBus, result: CommandResult, command_id: uuid.UUID) -> CommandReply:
    """The answer to a command: where its events landed, with their ids and types."""
    first = (result.version or 0) - len(result.events) + 1
    events = [
        EventRef(command_event_id(command_id, i), bus.events.type_of(event).name, first + i)
        for i, event in enumerate(result.events)
    ]
    return CommandReply(
        command_id, result.stream, result.version, result.position, events, result.replayed
    )
