"""kurrentdbclient's README, pointed at eskit: its quickstart, appending, reading,
subscribing and server-side filtering run as they are written, against ``eskit grpc`` on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kurrentdb.readme import blocks, sections
from tests.kurrentdb.servers import GrpcProcess

SECTIONS = (
    "Import class",
    "Construct client",
    "New events",
    "Recorded events",
    "Append events",
    "Idempotent append operations",
    "Read stream events",
    "Get current version",
    "How to implement snapshotting with KurrentDB",
    "Read all events",
    "Get commit position",
    "Get stream metadata",
    "Set stream metadata",
    "Delete stream",
    "Tombstone stream",
    "Subscribe to all events",
    "Subscribe to stream events",
)
"""The README's sections on what eskit serves, in order. Not: multi-stream and record
appends (KurrentDB 25's v2 API)."""


def run(code: str, namespace: dict[str, Any], where: str) -> None:
    try:
        exec(compile(code, f"<README: {where}>", "exec"), namespace)
    except Exception as error:
        raise AssertionError(f"README section {where!r} failed: {error!r}\n{code}") from error


@pytest.mark.slow
def test_the_readme(server: GrpcProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synopsis (which connects to localhost:2113 itself), then the sections, in one
    namespace, as the README is written."""
    monkeypatch.setenv("KDB_URI", server.uri())
    namespace: dict[str, Any] = {}
    heading, synopsis = next((h, c) for h, c in blocks() if h == "Synopsis")
    run(synopsis.replace("localhost:2113", server.address), namespace, heading)
    try:
        for heading, code in sections(*SECTIONS):
            run(code, namespace, heading)
    finally:
        client = namespace.get("client")
        if client is not None:
            client.close()
