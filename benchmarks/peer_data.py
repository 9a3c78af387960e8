"""What every side of the peer workloads (``benchmarks/peer.py``) is given: the same invoices,
lines and amounts, and where it keeps its events (a SQLite file or a PostgreSQL schema)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg

from benchmarks import postgres
from benchmarks.common import Payload

Backend = Literal["sqlite", "postgres"]
AGGREGATES = 100
"""Existing invoices the commands of the second workload go round."""
CURRENCY = "EUR"
CUSTOMER = "cus-0000"


@dataclasses.dataclass(frozen=True)
class Line:
    """One command on an existing invoice: add a line of ``amount`` to ``invoice_id``."""

    invoice_id: str
    sku: str
    amount: int


def existing_ids() -> list[str]:
    """The invoices that exist before the clock starts (created untimed)."""
    return [f"agg-{k:03d}" for k in range(AGGREGATES)]


def lines(items: list[Payload]) -> list[Line]:
    """One line per payload, the invoices taken round robin (load, one event, next)."""
    ids = existing_ids()
    return [
        Line(ids[i % AGGREGATES], f"sku-{i % 1_000:03d}", data["amount"])
        for i, (data, _) in enumerate(items)
    ]


def warm_up_lines(count: int) -> list[Line]:
    """Lines on the existing invoices before the clock starts."""
    ids = existing_ids()
    return [Line(ids[i % AGGREGATES], "sku-warm", 1) for i in range(count)]


@contextlib.contextmanager
def sqlite_file(directory: Path, name: str) -> Iterator[Path]:
    """A database file in the side's fresh directory."""
    yield directory.resolve() / f"{name}.db"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A new, empty schema in the run's database, dropped afterwards."""
    with postgres.fresh_schema() as schema:
        with psycopg.connect(postgres.database_url(), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        yield schema


@contextlib.contextmanager
def eskit_url(backend: Backend, directory: Path) -> Iterator[str]:
    """``eskit.open_store``'s URL for a fresh store on ``backend``."""
    if backend == "sqlite":
        with sqlite_file(directory, "eskit") as path:
            yield f"sqlite:///{path}"
    else:
        with postgres.fresh_schema() as schema:
            yield postgres.store_url(schema)
