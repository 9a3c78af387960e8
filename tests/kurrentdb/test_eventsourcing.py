"""The ``eventsourcing`` library's KurrentDB module (``eventsourcing-kurrentdb``) on eskit:
its README runs as written against ``eskit grpc`` on SQLite and PostgreSQL. An application
saves aggregates and loads them back (also from a new instance), and a projection runner
follows the application's notification log into a materialised view, catching up and then
live.

Only the connection string is changed, and the block that sets root certificates for a
secure server is left out (the server here is insecure, on loopback).
"""

from __future__ import annotations

import importlib.metadata
import sys
import uuid
from typing import Any

import pytest

from tests.kurrentdb.readme import BLOCK
from tests.kurrentdb.servers import GrpcProcess

CONNECTION = "esdb://localhost:2113?Tls=false"
"""The README's connection string, replaced by the server's."""


def readme_blocks() -> list[str]:
    text = importlib.metadata.metadata("eventsourcing-kurrentdb").get_payload()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return [match.group(1) for match in BLOCK.finditer(text)]


def test_the_eventsourcing_kurrentdb_readme(
    server: GrpcProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = readme_blocks()
    assert any(CONNECTION in block for block in blocks), "the README's connection string moved"
    for key in (
        "TRAININGSCHOOL_PERSISTENCE_MODULE",
        "KURRENTDB_URI",
        "KURRENTDB_ROOT_CERTIFICATES",
    ):
        monkeypatch.setenv(key, "")  # the README sets them; restored after the test
    monkeypatch.delenv("KURRENTDB_ROOT_CERTIFICATES")
    # the README's classes are dataclasses defined by exec: they need a module to live in,
    # of a name of its own per run (eventsourcing registers each class's topic once)
    module = type(sys)(f"eventsourcing_readme_{uuid.uuid4().hex}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    ran = 0
    for code in blocks:
        if "KURRENTDB_ROOT_CERTIFICATES" in code:
            continue
        code = code.replace(CONNECTION, server.uri())
        try:
            exec(compile(code, "<eventsourcing-kurrentdb README>", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README block failed: {error!r}\n{code}") from error
        ran += 1
    assert ran == len(blocks) - 1
    school = namespace["training_school"]
    assert school.get_dog_details("Fido")["tricks"] == (
        "roll over",
        "play dead",
        "sit and stay",
        "jump hoop",
    )
