"""``eskit serve`` and ``eskit tokens``: the command line around the API, and one real
server process from start to a clean stop with a live feed open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import eskit.sync
from eskit.addresses import is_loopback
from tests.cli.conftest import invoke
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: ``--app examples...`` imports from the working directory."""
TIMEOUT = 20.0


def test_tokens_are_created_listed_and_revoked(tmp_path: Path) -> None:
    file = str(tmp_path / "tokens.json")
    created = invoke(["tokens", "create", "ci", "--scope", "write:invoice", "--file", file])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("eskit_")
    assert "shown once" in created.stderr
    listed = invoke(["tokens", "list", "--file", file])
    assert "ci" in listed.stdout
    assert "write:invoice" in listed.stdout
    assert token not in listed.stdout + Path(file).read_text()
    as_json = invoke(["tokens", "list", "--file", file, "--json"]).stdout
    (record,) = [json.loads(line) for line in as_json.splitlines()]
    assert (record["name"], record["scopes"]) == ("ci", "write:invoice")
    assert len(str(record["sha256"])) == 12  # the start of the hash only, as in the table
    assert invoke(["tokens", "revoke", "ci", "--file", file]).exit_code == 0
    assert "no tokens" in invoke(["tokens", "list", "--file", file]).stdout
    again = invoke(["tokens", "revoke", "ci", "--file", file])
    assert again.exit_code == 1
    assert again.stderr.startswith("error: no token named 'ci'")
    bad = invoke(["tokens", "create", "x", "--scope", "delete", "--file", file])
    assert bad.exit_code == 1
    assert "must start with read, write or admin" in bad.stderr


def test_serve_refuses_other_hosts_without_tokens() -> None:
    refused = invoke(["serve", "--host", "0.0.0.0", "--url", "memory://"])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: refusing to serve on 0.0.0.0 without tokens")


def test_serve_checks_its_options_before_starting(tmp_path: Path) -> None:
    missing = invoke(["serve", "--tokens", str(tmp_path / "nope.json"), "--url", "memory://"])
    assert missing.exit_code == 1
    assert "no token file at" in missing.stderr
    url = invoke(["serve", "--url", "mysql://nowhere"])
    assert url.exit_code == 1
    assert "unsupported store URL" in url.stderr
    app = invoke(["serve", "--url", "memory://", "--app", "examples.invoicing.app:invoicing"])
    assert app.exit_code == 1
    assert "expected an eskit.web.AppSpec" in app.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """``eskit serve`` of the invoicing example in a process of its own, with an admin
    token: (base URL, token, process)."""
    tokens = str(tmp_path / "tokens.json")
    created = invoke(["tokens", "create", "admin", "--scope", "admin", "--file", tokens])
    token = created.stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "eskit.cli", "serve", "--url", f"sqlite:///{tmp_path}/events.db",
         "--app", "examples.invoicing.web:app_spec", "--tokens", tokens, "--port", str(port),
         "--archive", str(tmp_path / "shelf")],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1.0)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield url, token, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_the_server_stops_cleanly_with_a_live_feed_open(
    server: tuple[str, str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, token, process = server
    headers = {"Authorization": f"Bearer {token}"}
    body = {"invoice_id": "42", "customer_id": "c-1", "currency": "EUR", "due_date": "2024-05-31"}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as http:
        sent = http.post("/commands/CreateInvoice", json=body)
        assert sent.status_code == 200, sent.text
        through = http.get("/streams/invoice-42", params={"through_archive": "true"})
        assert through.status_code == 422  # --archive names no archive (yet): said so
        assert f"{tmp_path / 'shelf'} is no eskit archive" in through.json()["error"]["message"]
        with http.stream("GET", "/events/live") as feed:
            lines = feed.iter_lines()
            data = next(line for line in lines if line.startswith("data: "))
            assert json.loads(data[6:])["type"] == "InvoiceCreated"
            process.send_signal(signal.SIGTERM)
            assert [line for line in lines if line] == []  # the server ends the feed
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGTERM, output  # uvicorn re-raises the signal
    assert "serving sqlite:///" in output
    assert "Application shutdown complete" in output
    assert token not in output
    assert "c-1" not in output  # nor the command's payload
    with eskit.sync.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        assert [e.type for e in store.read_stream("invoice-42")] == ["InvoiceCreated"]
