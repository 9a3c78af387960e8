"""The OpenAPI document: FastAPI describes the routes and parameters, msgspec the bodies
(``components``), and every operation lists the errors it can answer with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec
from fastapi import FastAPI

from eskit.web.schemas import JSON

REF: Final = "#/components/schemas/{name}"
WHY: Final = {
    400: "Malformed request: the body is not JSON, or a header is not valid",
    401: "No token, or one that is unknown or revoked",
    403: "The token lacks the scope (or the category) this needs",
    404: "Nothing found",
    409: "Conflict with the current state: the stream is at another version, or a rule"
    " of the domain refuses the command",
    410: "The stream was deleted for ever (tombstoned)",
    413: "The request body is over the size limit",
    415: "The body is not sent as JSON (Content-Type: application/json)",
    422: "Invalid input: the message names the parameter or field",
    503: "A service is down or the server is shutting down: retry later",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def schemas_of(types: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """JSON schemas of ``types`` (referring to components) and the components they use.

    msgspec documents a datetime as a plain string, since it also reads datetimes without a
    UTC offset; the API asks for RFC 3339 (``format: date-time``), as it answers.
    """
    kinds = list(types)
    schemas, components = msgspec.json.schema_components(kinds, ref_template=REF)
    for info, schema in zip(msgspec.inspect.multi_type_info(kinds), schemas, strict=True):
        _date_times(info, schema, components, set())
    return list(schemas), components


def request_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref(name)}}}


def responses(
    status: int,
    body: str | dict[str, Any],
    *errors: int,
    secured: bool,
    media_type: str = JSON,
    description: str = "Done",
) -> dict[int | str, dict[str, Any]]:
    """The responses of an operation: ``status`` with ``body`` (a component's name or a
    schema), then each error (422 and 503 always; 401 and 403 when tokens are checked)."""
    schema = ref(body) if isinstance(body, str) else body
    documented: dict[int | str, dict[str, Any]] = {
        status: {"description": description, "content": {media_type: {"schema": schema}}}
    }
    codes = {*errors, 422, 503, *((401, 403) if secured else ())}
    for code in sorted(codes):
        documented[code] = {
            "description": WHY[code],
            "content": {JSON: {"schema": ref("ErrorBody")}},
        }
    return documented


def add_components(app: FastAPI, components: dict[str, Any]) -> None:
    """Serve ``components`` (msgspec's schemas) in the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {}).update(components)
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []):
                        _not_null(parameter["schema"])
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _date_times(
    info: msgspec.inspect.Type, schema: dict[str, Any], components: dict[str, Any], seen: set[str]
) -> None:
    """Mark the datetimes of ``info`` (described by ``schema``) with ``format: date-time``,
    in nested components too."""
    if isinstance(info, msgspec.inspect.DateTimeType):
        if schema.get("type") == "string":
            schema["format"] = "date-time"
    elif isinstance(info, msgspec.inspect.UnionType):
        for branch in schema.get("anyOf", []):
            for option in info.types:
                _date_times(option, branch, components, seen)
    elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.SetType):
        _date_times(info.item_type, schema.get("items", {}), components, seen)
    elif isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
        name = info.cls.__name__
        if name in seen or name not in components:
            return
        seen.add(name)
        properties = components[name].get("properties", {})
        for field in info.fields:
            _date_times(field.type, properties.get(field.encode_name, {}), components, seen)


def _not_null(schema: dict[str, Any]) -> None:
    """An optional parameter is absent, never ``null``: FastAPI documents ``int | None`` as
    either, and clients (schemathesis) would send the text ``null``."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and len(schema["anyOf"]) == 2:
        del schema["anyOf"]
        schema.update(branches[0])
