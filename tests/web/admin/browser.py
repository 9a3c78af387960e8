"""A real browser for the admin UI tests: Debian's Chromium driven by Playwright, and a real
``eskit serve`` of the test application on a free port.

Outside CI a missing Chromium (or Playwright) skips the browser tests with the reason;
under ``CI=true`` it fails them (``.ci/run`` installs Chromium). Screenshots go to
``ESKIT_ARTIFACTS`` (default ``.artifacts/screenshots`` in the checkout).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.cli.conftest import invoke
from tests.services import free_port, unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[3]
"""The checkout: ``--app tests...`` imports from the working directory."""
CHROMIUM = os.environ.get("ESKIT_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP = 20.0


def artifacts() -> Path:
    """Where screenshots are kept (created)."""
    directory = Path(os.environ.get("ESKIT_ARTIFACTS", ROOT / ".artifacts" / "screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed at the end; skipped (failed in CI) if there is none."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Error as error:
            unavailable(f"Chromium at {CHROMIUM} does not start: {error}")
        try:
            yield browser
        finally:
            browser.close()


@dataclasses.dataclass
class Served:
    """``eskit serve`` in a process of its own: its URL, tokens by name, and its log."""

    url: str
    tokens: dict[str, str]
    log: Path

    def command(self, name: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        """Send a command through the API as the admin token."""
        response = httpx.post(
            f"{self.url}/commands/{name}",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens['admin']}", **headers},
            timeout=10.0,
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def append(self, stream: str, event_type: str, data: dict[str, Any]) -> None:
        response = httpx.post(
            f"{self.url}/streams/{stream}",
            json={"events": [{"type": event_type, "data": data}]},
            headers={"Authorization": f"Bearer {self.tokens['admin']}"},
            timeout=10.0,
        )
        assert response.status_code == 201, response.text


def serve(directory: Path, app: str) -> Iterator[Served]:
    """``eskit serve --app app`` over a SQLite file in ``directory``, with an admin and a
    reader token, until the caller is done."""
    tokens = str(directory / "tokens.json")
    issued = {}
    for name, scope in (("admin", "admin"), ("reader", "read")):
        created = invoke(["tokens", "create", name, "--scope", scope, "--file", tokens])
        issued[name] = created.stdout.strip()
    port = free_port()
    log = directory / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "eskit.cli", "serve", "--url",
             f"sqlite:///{directory}/events.db", "--app", app, "--tokens", tokens,
             "--port", str(port)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while not _ready(url):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the server did not start: {log.read_text()}"
            time.sleep(0.1)
        yield Served(url, issued, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=STARTUP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False
