"""``eskit events catalog``: the invoicing example's event types with their versions,
upcasters and fields at 80 columns, one JSON Schema document with ``--json``, and clear
errors for a bad ``--app``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from eskit.cli import app
from tests.cli.conftest import invoke

REGISTRY = "examples.invoicing.events:events"
FIXTURES = Path(__file__).parents[1] / "domain" / "fixtures"


def test_the_table_lists_each_type_and_version_at_80_columns() -> None:
    result = CliRunner().invoke(
        app, ["events", "catalog", "--app", REGISTRY], env={"COLUMNS": "80"}
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"event catalog of {REGISTRY}"
    assert max(len(line) for line in lines) <= 80
    assert "_invoice_created_v1" in result.stdout  # InvoiceCreated v1 is read by an upcaster
    assert "(upcaster)" in result.stdout
    assert "(no schema recorded)" in result.stdout


def test_the_table_names_the_fields_of_each_version() -> None:
    result = invoke(["events", "catalog", "--app", REGISTRY, "--fixtures", str(FIXTURES)])

    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "InvoiceCreated" in line]
    assert len(rows) == 2
    v1, v2 = rows
    assert "│       1 │ _invoice_created_v1 (upcaster)" in v1
    assert "(no schema recorded)" in v1  # the fixture of v1 predates recorded schemas
    assert "│       2 │ InvoiceCreated (class)" in v2
    assert "due_date: date" in v2
    assert "currency: string" in v2


def test_json_is_one_json_schema_document_of_every_type_and_version() -> None:
    result = invoke(["events", "catalog", "--app", REGISTRY, "--json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    branches = {b["title"]: b for b in document["oneOf"]}
    assert {"InvoiceCreated v1", "InvoiceCreated v2", "InvoicePaid v1"} <= set(branches)
    created = branches["InvoiceCreated v2"]["properties"]
    assert created["type"] == {"const": "InvoiceCreated"}
    assert created["schema_version"] == {"const": 2}
    data = document["$defs"][created["data"]["$ref"].removeprefix("#/$defs/")]
    body = resolve(document, data["$ref"])
    assert body["required"] == ["invoice_id", "customer_id", "currency", "due_date"]
    assert body["properties"]["due_date"] == {"type": "string", "format": "date"}
    old = branches["InvoiceCreated v1"]
    assert "_invoice_created_v1" in old["description"]


def resolve(document: dict[str, Any], reference: str) -> dict[str, Any]:
    """The part of ``document`` a local ``$ref`` points at."""
    found: object = document
    for part in reference.removeprefix("#/").split("/"):
        assert isinstance(found, dict)
        found = found[part]
    assert isinstance(found, dict)
    return found


def test_a_bad_app_is_one_clear_error() -> None:
    for spec, message in (
        ("examples.invoicing.nothing:events", "cannot import examples.invoicing.nothing"),
        ("examples.invoicing.events:InvoicePaid", "expected an EventRegistry, got <class"),
        ("examples.invoicing.events", "--app must be module:attribute"),
    ):
        result = invoke(["events", "catalog", "--app", spec])
        assert result.exit_code == 1
        assert result.stderr.startswith("error: "), result.stderr
        assert message in result.stderr, result.stderr
