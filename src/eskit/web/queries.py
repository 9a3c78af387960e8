"""``GET /queries/{name}``: the application's read-model queries, their parameters taken
from the query string.

A query is a function (sync or async) whose keyword parameters, with their type hints and
defaults, become the operation's query parameters (scalars, or lists of them given by
repeating the key), and whose return type is the answer's schema. Bind what is not a
parameter (the read model's database) with ``functools.partial`` or a closure. A query
that returns None answers 404.

``Wait-For-Position: <position>`` (a command's answer gives it) makes a query wait, up to
``Settings.wait_timeout``, until the read models have applied the log up to there: read
your own writes.
"""

import asyncio
import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header
from starlette.datastructures import QueryParams
from starlette.requests import Request

from eskit.store import rules
from eskit.web.auth import require
from eskit.web.context import Context, context
from eskit.web.errors import ApiError
from eskit.web.inputs import only_parameters
from eskit.web.openapi import responses, schemas_of
from eskit.web.schemas import JSONResponse

Query = Callable[..., Any]
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SCALARS = ("string", "integer", "number", "boolean")
INT64 = (-(2**63), 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class Param:
    """One query-string parameter of a query."""

    name: str
    kind: Any
    default: Any
    many: bool

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class QuerySpec:
    """A query as the API serves it: its function, parameters and answer type."""

    name: str
    function: Query
    params: tuple[Param, ...]
    returns: Any


def describe(name: str, function: Query) -> QuerySpec:
    """Read ``function``'s parameters and return type; ``TypeError`` if the API cannot
    take them from a query string."""
    if not NAME.fullmatch(name):
        raise ValueError(f"query name {name!r}: use letters, digits, '_', '.' or '-'")
    hints = typing.get_type_hints(_unwrapped(function))
    params = []
    for p in inspect.signature(function).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"query {name}: parameter {p.name} cannot be given by name")
        kind = hints.get(p.name, str)
        many = typing.get_origin(kind) is list
        item = typing.get_args(kind)[0] if many and typing.get_args(kind) else kind
        (schema,), _ = schemas_of([item])
        if not _scalar(schema):
            raise TypeError(f"query {name}: parameter {p.name} is not a scalar ({kind})")
        params.append(Param(p.name, kind, p.default, many))
    return QuerySpec(name, function, tuple(params), hints.get("return", Any))


def add_query_routes(
    router: APIRouter, queries: Mapping[str, Query], secured: Sequence[Any]
) -> dict[str, Any]:
    """Add a route per query; return the schemas their answers refer to."""
    specs = [describe(name, function) for name, function in queries.items()]
    kinds = [p.kind for s in specs for p in s.params]
    schemas, components = schemas_of([*(s.returns for s in specs), *kinds])
    answers, parameters = schemas[: len(specs)], iter(schemas[len(specs) :])
    for spec, answer in zip(specs, answers, strict=True):
        documented = [_parameter(p, next(parameters)) for p in spec.params]
        router.add_api_route(
            f"/queries/{spec.name}",
            _endpoint(spec),
            methods=["GET"],
            tags=["queries"],
            operation_id=f"query_{spec.name}",
            summary=spec.name,
            description=inspect.getdoc(_unwrapped(spec.function)),
            dependencies=list(secured),
            response_class=JSONResponse,
            responses=responses(200, answer, 404, secured=bool(secured)),
            openapi_extra={"parameters": documented},
        )
    return components


def _endpoint(spec: QuerySpec) -> Any:
    async def run(
        request: Request,
        wait_for_position: Annotated[
            int | None,
            Header(
                alias="Wait-For-Position",
                ge=0,
                le=rules.MAX_INT64,
                description="Answer only once the read models have applied the log up to"
                " this position (e.g. a command's answer's position).",
            ),
        ] = None,
    ) -> JSONResponse:
        ctx = context(request)
        require(ctx.authenticate(request), "read")
        only_parameters(request, *(p.name for p in spec.params))
        arguments = parse(spec, request.query_params)
        if wait_for_position is not None:
            await wait(ctx, wait_for_position)
        result = spec.function(**arguments)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            raise ApiError(404, "NotFound", f"query {spec.name} found nothing")
        return JSONResponse(result)

    return run


def parse(spec: QuerySpec, given: QueryParams) -> dict[str, Any]:
    """The query's arguments from the query string; 422 naming a bad one."""
    arguments: dict[str, Any] = {}
    for p in spec.params:
        if p.name not in given:
            if p.required:
                raise ApiError(422, "ValidationError", f"query parameter {p.name} is required")
            continue
        value: Any = given.getlist(p.name) if p.many else given[p.name]
        try:
            arguments[p.name] = msgspec.convert(value, p.kind, strict=False)
        except msgspec.ValidationError as error:
            raise ApiError(422, "ValidationError", f"query parameter {p.name}: {error}") from None
        if any(_too_big(v) for v in (arguments[p.name] if p.many else [arguments[p.name]])):
            message = f"query parameter {p.name}: integers must fit in 64 bits"
            raise ApiError(422, "ValidationError", message)
    return arguments


def _too_big(value: object) -> bool:
    """An integer a database cannot take (SQLite and PostgreSQL integers are 64-bit)."""
    return isinstance(value, int) and not INT64[0] <= value <= INT64[1]


async def wait(ctx: Context, position: int) -> None:
    """Wait until the read models reached ``position``; 503 if they do not in time."""
    if ctx.wait_until is None:
        raise ApiError(400, "BadHeader", "Wait-For-Position: this API has no read models")
    head = await ctx.store.written_position()  # a replica may not have replayed it yet
    if position > head:
        message = f"Wait-For-Position {position} is past the end of the log (position {head})"
        raise ApiError(422, "ValidationError", message)
    try:
        async with asyncio.timeout(ctx.settings.wait_timeout):
            await ctx.wait_until(position)
    except TimeoutError:
        message = f"the read models have not reached position {position} yet; retry later"
        raise ApiError(503, "NotCaughtUp", message, {"Retry-After": "1"}) from None


def _parameter(param: Param, schema: dict[str, Any]) -> dict[str, Any]:
    documented: dict[str, Any] = {"name": param.name, "in": "query", "required": param.required}
    if not param.required:
        schema = {**schema, "default": msgspec.to_builtins(param.default)}
    documented["schema"] = _bounded(schema)
    if param.many:
        documented.update(style="form", explode=True)
    return documented


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its integers limited to 64 bits, as ``parse`` checks them."""
    if schema.get("type") == "integer":
        return {"minimum": INT64[0], "maximum": INT64[1], **schema}
    if "items" in schema:
        return {**schema, "items": _bounded(schema["items"])}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_bounded(s) for s in schema["anyOf"]]}
    return schema


def _scalar(schema: dict[str, Any]) -> bool:
    if "anyOf" in schema:
        return all(_scalar(s) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        return True
    return schema.get("type") in (*SCALARS, "null")


def _unwrapped(function: Query) -> Callable[..., Awaitable[Any] | Any]:
    """The function a ``functools.partial`` wraps (its type hints are the function's)."""
    while isinstance(function, functools.partial):
        function = function.func
    return function
