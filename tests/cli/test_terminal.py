"""The CLI in an 80-column terminal and through a pipe (``CliRunner``'s output is no TTY):
tables that never cut a name, ``--json`` for scripts, no stray progress bars, flags shown as
flags in every help."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

import eskit
from eskit.cli import app
from tests.cli.conftest import append, invoke
from tests.cli.test_streams import rows

APP = "tests.cli.apps:projections"
LONG = "invoice-inv-2026-000000000000000000001-"  # two streams differing only at the end


def narrow(args: Sequence[str]) -> Result:
    """``eskit args`` as an 80-column terminal, or a pipe (rich's default there), shows it."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


def folded(output: str, column: int) -> list[str]:
    """The cells of one column, each joined back from the lines it was folded onto; a record
    starts on a line whose first cell is not empty after a line where it was."""
    cells: list[str] = []
    for row in rows(output):
        if not cells or row[1]:
            cells.append(row[column])
        else:
            cells[-1] += row[column]
    return cells


@pytest.fixture
def long_names(url: str) -> str:
    asyncio.run(append(url, LONG + "alpha", eskit.NewEvent("InvoiceCreatedFromTheOldSystem", {})))
    asyncio.run(append(url, LONG + "beta", eskit.NewEvent("InvoiceCreatedFromTheOldSystem", {})))
    return url


def test_streams_list_at_80_columns_folds_names_and_cuts_none(long_names: str) -> None:
    result = narrow(["streams", "list", long_names])

    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= 80
    assert "…" not in result.stdout
    streams = folded(result.stdout, 0)
    assert LONG + "alpha" in streams
    assert LONG + "beta" in streams
    assert "InvoiceCreatedFromTheOldSystem" in folded(result.stdout, 3)


def test_projections_status_at_80_columns_cuts_no_name_or_status(url: str) -> None:
    ran = invoke(["projections", "run", url, "--app", APP, "--until-caught-up"])
    assert ran.exit_code == 0, ran.output

    result = narrow(["projections", "status", url])

    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= 80
    assert "…" not in result.stdout
    (row,) = rows(result.stdout)
    assert (row[0], row[4]) == ("invoice_totals", "running")


def test_projections_status_at_80_columns_after_a_rebuild_cuts_nothing(url: str) -> None:
    """The last rebuild's column (and the skips') fold; name and status stay whole."""
    ran = invoke(["projections", "run", url, "--app", APP, "--until-caught-up"])
    assert ran.exit_code == 0, ran.output
    rebuilt = invoke(["projections", "rebuild", url, "invoice_totals", "--app", APP])
    assert rebuilt.exit_code == 0, rebuilt.output

    result = narrow(["projections", "status", url])

    assert result.exit_code == 0, result.output
    assert max(map(len, result.stdout.splitlines())) <= 80
    assert "…" not in result.stdout
    assert folded(result.stdout, 0) == ["invoice_totals"]
    assert "".join(folded(result.stdout, 4)) == "running"
    assert "last rebuild" in result.stdout
    (rebuilt_at,) = folded(result.stdout, 6)
    assert rebuilt_at.endswith(" UTC")


def test_projections_run_shows_the_event_type_of_an_error(url: str) -> None:
    asyncio.run(append(url, "invoice-9", eskit.NewEvent("Poison", {})))
    result = invoke(
        ["projections", "run", url, "--app", "tests.cli.apps:fragile", "--until-caught-up"]
    )

    assert result.exit_code == 1
    assert "(None)" not in result.stdout
    assert "at 6 (Poison): RuntimeError: cannot digest poison" in result.stdout


def json_lines(result: Result) -> list[dict[str, object]]:
    """Every stdout line is one JSON object: nothing else is there."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines
    return [json.loads(line) for line in lines]


def test_json_lists_streams_one_object_per_line(long_names: str) -> None:
    records = json_lines(narrow(["streams", "list", long_names, "--json"]))

    assert [r["stream"] for r in records] == [
        "customer-7",
        "invoice-1",
        "invoice-2",
        LONG + "alpha",
        LONG + "beta",
    ]
    first = records[3]
    assert set(first) == {
        "stream",
        "events",
        "last_position",
        "last_type",
        "last_recorded",
        "status",
    }
    assert (first["events"], first["last_position"], first["status"]) == (1, 6, "live")
    assert str(first["last_recorded"]).endswith("Z")


def test_json_sends_the_next_page_hint_to_stderr(url: str) -> None:
    result = invoke(["streams", "list", url, "--json", "--limit", "1"])

    assert [r["stream"] for r in json_lines(result)] == ["customer-7"]
    assert "more streams follow: add --after 'customer-7'" in result.stderr


def test_json_shows_a_stream_info_and_projections(url: str) -> None:
    events = json_lines(invoke(["streams", "show", url, "invoice-1", "--json"]))
    assert [(e["version"], e["type"], e["data"]) for e in events] == [
        (0, "InvoiceCreated", {"amount": 120}),
        (1, "InvoicePaid", {"amount": 20}),
    ]
    assert events[0]["metadata"] == {"user": "ann"}
    assert json_lines(invoke(["info", url, "--json"])) == [{"store": url, "last_position": 5}]

    ran = json_lines(
        invoke(["projections", "run", url, "--app", APP, "--until-caught-up", "--json"])
    )
    assert [(r["name"], r["position"], r["lag"], r["status"]) for r in ran] == [
        ("invoice_totals", 5, 0, "stopped")
    ]
    (status,) = json_lines(invoke(["projections", "status", url, "--json"]))
    assert (status["name"], status["position"], status["lag"], status["skips"]) == (
        "invoice_totals",
        5,
        0,
        0,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "{url}"],
        ["export", "{url}", "{tmp}/out.jsonl"],
        ["trace", "{url}", "some-correlation-id"],
        ["copy", "{url}", "sqlite:///{tmp}/copy.db"],
        ["projections", "rebuild", "{url}", "invoice_totals", "--app", APP],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_missing_store_prints_the_error_line_and_no_bar(args: list[str], tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = invoke([a.format(url=f"sqlite:///{path}", tmp=tmp_path) for a in args])

    assert result.exit_code == 1
    assert result.stderr == f"error: no such store: {path}\n"


def test_a_failure_midway_takes_the_bar_down(url: str) -> None:
    asyncio.run(append(url, "invoice-9", eskit.NewEvent("Poison", {})))
    result = invoke(["projections", "rebuild", url, "fragile", "--app", "tests.cli.apps:fragile"])

    assert result.exit_code == 1
    assert result.stderr == (
        "error: rebuilding fragile failed: RuntimeError: cannot digest poison\n"
    )


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's path below ``group`` (typer's own click), ``group`` itself first."""
    yield path
    if hasattr(group, "list_commands"):
        context = group.context_class(group)
        for name in group.list_commands(context):
            yield from commands(group.get_command(context, name), (*path, name))


def test_no_help_shows_a_flag_with_a_value_type() -> None:
    every = list(commands(typer.main.get_command(app)))
    assert ("streams", "list") in every
    assert ("projections", "run") in every

    for path in every:
        result = narrow([*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.stdout, path
        assert "--help  " in result.stdout or "--help " in result.stdout

    show = narrow(["streams", "show", "--help"]).stdout
    assert "--backwards / --no-backwards" in show
    assert "--json" in show
