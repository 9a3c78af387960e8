"""Fixtures of the privacy tests: key stores on every backend, a keyring, a store whose
registry encrypts with it."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

import eskit
from eskit.domain import EventRegistry
from eskit.privacy import Keyring, KeyStore, MasterKey, MemoryKeyStore, open_keystore
from tests import postgres
from tests.privacy import events as examples

KEYSTORES = ["memory", "sqlite", "postgresql"]


def keystore_url(kind: str, tmp_path: Path) -> str:
    """A key store of its own: a file, or a schema in the run's PostgreSQL database."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return postgres.store_url().replace("schema=t_", "schema=k_")


def drop_schema(url: str) -> None:
    """Drop the PostgreSQL schema a test's URL names."""
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query))["schema"]
    conninfo = urllib.parse.urlunsplit(parts._replace(query=""))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def files_bytes(directory: Path, prefix: str) -> bytes:
    """The bytes of every file of ``directory`` whose name starts with ``prefix`` (a
    SQLite file, its write-ahead log and shared memory)."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith(prefix))


@pytest.fixture(params=KEYSTORES)
def keystore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    """A key store on every backend, closed (and its schema dropped) after the test."""
    url = keystore_url(request.param, tmp_path)
    keys = open_keystore(url)
    try:
        yield keys
    finally:
        keys.close()
        if request.param == "postgresql":
            drop_schema(url)


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def keyring(master: MasterKey) -> Keyring:
    return Keyring(MemoryKeyStore(), master)


@pytest.fixture
def events(keyring: Keyring) -> EventRegistry:
    """The example registry, encrypting with ``keyring``."""
    registry = examples.registry()
    registry.encrypt_with(keyring)
    return registry


@pytest.fixture
async def store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[eskit.EventStore]:
    """A SQLite store file (so tests can search its bytes)."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        yield opened
