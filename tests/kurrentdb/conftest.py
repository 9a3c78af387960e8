"""An ``eskit grpc`` server per backend (SQLite file, PostgreSQL schema) for the session,
and a ``kurrentdbclient.KurrentDBClient`` connected to it. Tests name their own streams
(``unique_stream``), so they share the server without seeing each other's streams."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kurrentdbclient import KurrentDBClient

from tests import postgres
from tests.kurrentdb.servers import GrpcProcess

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)]
"""Both in ``make test``; ``-m 'not slow'`` runs the client tests on SQLite only (a server
process starts in seconds on a busy machine)."""


def store_url(backend: str, directory: Path) -> str:
    """A store of its own on ``backend`` (``directory``: where a SQLite file goes)."""
    if backend == "sqlite":
        return f"sqlite:///{directory}/events.db"
    return postgres.store_url()


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcProcess]:
    """``eskit grpc`` over a store of its own on each backend (started once: a start costs
    seconds on a busy machine)."""
    url = store_url(request.param, tmp_path_factory.mktemp("grpc"))
    with GrpcProcess(url) as process:
        yield process


@pytest.fixture
def client(server: GrpcProcess) -> Iterator[KurrentDBClient]:
    connected = KurrentDBClient(server.uri())
    yield connected
    connected.close()


@pytest.fixture
def stream() -> str:
    """A stream name of the test's own: ``order-<hex>`` (category ``order``)."""
    return f"order-{uuid.uuid4().hex[:12]}"
