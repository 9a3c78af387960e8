"""``eskit streams list|show|tail`` on a real SQLite file."""

from __future__ import annotations

import asyncio
import re
import threading

import eskit
from tests.cli.conftest import append, invoke


def rows(output: str) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [
        [c.strip() for c in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_list_shows_every_stream_with_its_last_event(url: str) -> None:
    result = invoke(["streams", "list", url])
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in table] == [
        ("customer-7", "1", "4", "CustomerRegistered", "live"),
        ("invoice-1", "2", "3", "InvoicePaid", "live"),
        ("invoice-2", "2", "5", "InvoicePaid", "deleted"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", table[0][4])


def test_list_filters_by_category_and_pages(url: str) -> None:
    first = invoke(["streams", "list", url, "--category", "invoice", "--limit", "1"])
    assert [r[0] for r in rows(first.stdout)] == ["invoice-1"]
    assert "more streams follow: add --after 'invoice-1'" in first.stdout

    rest = invoke(["streams", "list", url, "-c", "invoice", "--after", "invoice-1"])
    assert [r[0] for r in rows(rest.stdout)] == ["invoice-2"]
    assert "more streams follow" not in rest.stdout


def test_list_shows_names_literally(url: str) -> None:
    asyncio.run(append(url, "[bold]x-1", eskit.NewEvent("[red]Odd", {})))
    result = invoke(["streams", "list", url, "--category", "[bold]x"])
    assert [r[0] for r in rows(result.stdout)] == ["[bold]x-1"]
    assert "[red]Odd" in result.stdout


def test_list_rejects_a_bad_limit(url: str) -> None:
    result = invoke(["streams", "list", url, "--limit", "0"])
    assert result.exit_code == 2  # typer's usage error


def test_show_prints_events_with_metadata_and_data(url: str) -> None:
    result = invoke(["streams", "show", url, "invoice-1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "invoice-1 · v0 · InvoiceCreated" in out
    assert "invoice-1 · v1 · InvoicePaid" in out
    assert out.index("InvoiceCreated") < out.index("InvoicePaid")
    assert re.search(r'"user": "ann"', out)
    assert re.search(r'"amount": 120', out)
    assert "position 1 · " in out


def test_show_backwards_with_a_limit(url: str) -> None:
    result = invoke(["streams", "show", url, "invoice-1", "--backwards", "--limit", "1"])
    assert "v1 · InvoicePaid" in result.stdout
    assert "InvoiceCreated" not in result.stdout
    assert "more events follow: add --from-version 0" in result.stdout


def test_show_from_a_version(url: str) -> None:
    result = invoke(["streams", "show", url, "invoice-1", "--from-version", "1"])
    assert "InvoicePaid" in result.stdout
    assert "InvoiceCreated" not in result.stdout


def test_show_of_a_deleted_or_unknown_stream(url: str) -> None:
    for stream in ("invoice-2", "nothing-1"):
        result = invoke(["streams", "show", url, stream])
        assert result.exit_code == 0
        assert f"stream '{stream}' has no events" in result.stdout


def test_show_of_an_invalid_stream_name_is_one_error_line(url: str) -> None:
    result = invoke(["streams", "show", url, "$all"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: stream name '$all' starts with '$'")


def test_tail_prints_one_line_per_event(url: str) -> None:
    result = invoke(["streams", "tail", url, "--after", "1", "--count", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(
        r"\s+2 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC invoice-2 v0 InvoiceCreated \{\"amount\":50\}",
        lines[0],
    )
    assert [line.split()[0] for line in lines] == ["2", "3", "4"]


def test_tail_filters_by_category_and_type(url: str) -> None:
    tail = ["streams", "tail", url, "--after", "0", "--count", "2"]
    result = invoke([*tail, "-c", "invoice", "--type", "InvoicePaid"])
    assert [line.split()[4:7] for line in result.stdout.splitlines()] == [
        ["invoice-1", "v1", "InvoicePaid"],
        ["invoice-2", "v1", "InvoicePaid"],
    ]


def test_tail_waits_for_new_events(url: str) -> None:
    """Past the head, the tail waits for what is appended next (here by another thread)."""
    done: list[str] = []

    def tail() -> None:
        done.append(invoke(["streams", "tail", url, "--after", "5", "--count", "1"]).stdout)

    thread = threading.Thread(target=tail)
    thread.start()
    asyncio.run(append(url, "invoice-3", eskit.NewEvent("InvoiceCreated", {"amount": 1})))
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "invoice-3 v0 InvoiceCreated" in done[0]


def test_show_and_tail_print_events_kept_as_bytes(url: str) -> None:
    quickstart = eskit.RawData("application/json", b"I wrote my first event")
    binary = eskit.RawData("application/octet-stream", b"\x00\xff")
    events = [
        eskit.NewEvent("TestEvent", quickstart, eskit.RawData("", b"\x01")),
        eskit.NewEvent("Blob", binary),
    ]
    asyncio.run(append(url, "blob-1", *events))
    shown = invoke(["streams", "show", url, "blob-1"])
    assert shown.exit_code == 0, shown.output
    assert "data (application/json)" in shown.stdout
    assert "I wrote my first event (22 bytes)" in shown.stdout
    assert "base64:AQ== (1 bytes)" in shown.stdout
    assert "base64:AP8= (2 bytes)" in shown.stdout
    tail = invoke(["streams", "tail", url, "--after", "5", "--count", "2"])
    assert tail.stdout.splitlines()[0].endswith(
        "TestEvent (application/json) I wrote my first event (22 bytes)"
    )
