"""``eskit events``: what an application's events look like (its event catalog)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from eskit.cli.common import fail, import_attribute
from eskit.cli.records import Column, show_records
from eskit.domain.catalog import Catalog, catalog, json_schema, recorded_schemas
from eskit.domain.events import EventRegistry

app = typer.Typer(
    help="Look at an application's event types.\n\n"
    "Example: eskit events catalog --app examples.invoicing.events:events",
    no_args_is_help=True,
)

Registry = Annotated[
    str,
    typer.Option(
        "--app",
        help="module:attribute holding the EventRegistry (e.g. myapp.events:events).",
        show_default=False,
    ),
]
Fixtures = Annotated[
    Path | None,
    typer.Option(
        "--fixtures",
        help="Folder of golden fixtures (eskit.testing.write_fixture): the schemas of old"
        " versions recorded there are shown too.",
        file_okay=False,
    ),
]
AsSchema = Annotated[
    bool,
    typer.Option("--json", help="Write one JSON Schema document of every event on stdout."),
]


@app.command("catalog")
def catalog_command(
    registry: Registry, fixtures: Fixtures = None, as_json: AsSchema = False
) -> None:
    """List every registered event type with its versions, the upcasters that read old
    versions, and the fields of each version's data (from its JSON Schema).

    Example: eskit events catalog --app examples.invoicing.events:events --json > events.json
    """
    found = _catalog(registry, fixtures)
    if as_json:
        typer.echo(json.dumps(json_schema(found, title=registry), indent=2))
        return
    show_records(COLUMNS, rows(found), title=f"event catalog of {registry}", as_json=False)


COLUMNS = (
    Column("type", names=True),
    Column("version", right=True),
    Column("read_by", "read by", optional=True),
    Column("fields"),
)


def rows(found: Catalog) -> list[dict[str, object]]:
    """One row per type and version, oldest first: the class reads today's version, an
    upcaster each older one (short names; ``--json`` has the full ones)."""
    shown: list[dict[str, object]] = []
    for info in found.types:
        for version in info.versions:
            reader = info.cls if version.current else version.upcaster
            what = "class" if version.current else "upcaster"
            shown.append(
                {
                    "type": info.name,
                    "version": version.version,
                    "read_by": None if reader is None else f"{reader.rpartition('.')[2]} ({what})",
                    "fields": _fields(version.schema, info.sensitive if version.current else []),
                }
            )
    return shown


def _fields(schema: dict[str, Any] | None, sensitive: list[str]) -> str:
    """``name: type`` for each property of the data's schema; ``?`` marks optional ones."""
    if schema is None:
        return "(no schema recorded)"
    body = schema
    reference = schema.get("$ref", "")
    if reference.startswith("#/$defs/"):
        body = schema.get("$defs", {}).get(reference.removeprefix("#/$defs/"), {})
    required = set(body.get("required", []))
    parts = []
    for name, prop in body.get("properties", {}).items():
        kind = _kind(prop)
        mark = "" if name in required else "?"
        secret = " (sensitive)" if name in sensitive else ""
        parts.append(f"{name}{mark}: {kind}{secret}")
    return ", ".join(parts)


def _kind(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rpartition("/")[2]
    if "anyOf" in prop:
        return " | ".join(_kind(branch) for branch in prop["anyOf"])
    kind = str(prop.get("type", "any"))
    if "format" in prop:
        kind = str(prop["format"])
    if kind == "array" and isinstance(prop.get("items"), dict):
        kind = f"array of {_kind(prop['items'])}"
    return kind


def _catalog(spec: str, fixtures: Path | None) -> Catalog:
    try:
        registry = import_attribute(spec)
    except ValueError as error:
        fail(str(error))
    if not isinstance(registry, EventRegistry):
        fail(f"--app {spec}: expected an EventRegistry, got {registry!r:.60}")
    return catalog(registry, None if fixtures is None else recorded_schemas(fixtures))
