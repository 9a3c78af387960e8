"""The brokers the tests talk to: the machine's own (NATS, Redis, RabbitMQ) and NATS servers
a test starts, kills and restarts itself.

Addresses come from ``ESKIT_TEST_NATS``, ``ESKIT_TEST_REDIS`` and ``ESKIT_TEST_RABBITMQ``
(defaults: this machine's services); ``ESKIT_TEST_NATS_SERVER`` is the nats-server binary.
Outside CI a missing service skips the test with the reason; under ``CI=true`` it fails it,
as ``tests.postgres`` does for PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

NATS_URL = os.environ.get("ESKIT_TEST_NATS", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("ESKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("ESKIT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS_SERVER = os.environ.get("ESKIT_TEST_NATS_SERVER", "/usr/sbin/nats-server")


def unavailable(reason: str) -> NoReturn:
    """Skip (fail under ``CI=true``) a test whose service is missing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: service tests must run)")
    pytest.skip(reason)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(url: str, default_port: int) -> str:
    """``url`` if something listens at its host and port, else skip (or fail in CI)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    if not _reachable(host, port):
        unavailable(f"{parts.scheme} broker at {host}:{port} is not reachable")
    return url


def nats_url() -> str:
    return require(NATS_URL, 4222)


def redis_url() -> str:
    return require(REDIS_URL, 6379)


def rabbitmq_url() -> str:
    return require(RABBITMQ_URL, 5672)


def unique(prefix: str) -> str:
    """A name of its own for one test (lower case, digits, underscores)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer:
    """A ``nats-server -js`` owned by one test: on a spare port, with its store in
    ``directory``, killed (SIGKILL) and restarted on the same port and store at will."""

    def __init__(self, directory: Path) -> None:
        if shutil.which(NATS_SERVER) is None:
            unavailable(f"{NATS_SERVER} is not installed")
        self.directory = directory
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "nats.log").open("ab")
        self.process = subprocess.Popen(
            [
                NATS_SERVER,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.directory / "store"),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _reachable("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"nats-server did not start: see {self.directory / 'nats.log'}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, no flush beyond what the kernel already has."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()
