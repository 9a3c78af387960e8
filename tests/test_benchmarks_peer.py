"""A tiny run of the peer benchmarks (``benchmarks/peer.py``): every side of every workload
runs on a real SQLite file and the real PostgreSQL, and handles exactly what it must.

The peer (``eventsourcing``, the ``bench`` extra, which ``dev`` includes) must be installed
under ``CI=true``; elsewhere these tests are skipped without it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks import peer
from benchmarks import postgres as bench_postgres

from tests import postgres

if os.environ.get("CI") != "true":
    pytest.importorskip("eventsourcing")


@pytest.fixture
def bench_database() -> Iterator[None]:
    """The benchmarks' own database on the tests' server (skipped, or failed under CI, if
    the server is not reachable), dropped afterwards."""
    postgres.database_url()
    bench_postgres.configure(postgres.SERVER)
    yield
    bench_postgres.drop_database()


def _tiny(name: str) -> peer.Workload:
    workload = next(w for w in peer.WORKLOADS if w.name == name)
    return dataclasses.replace(workload, size=30 if workload.count is not None else 12)


def _check(outcome: peer.Outcome) -> None:
    workload = outcome.workload
    available = [f for f in peer.FACES if not isinstance(workload.sides[f], str)]
    assert list(outcome.best) == available
    assert outcome.wrong() == []
    for target in workload.targets:  # measured where the face ran; never met where it did not
        measured = outcome.ratio(target.face, target.against) is not None
        assert measured == (target.face in available)
        assert measured or not outcome.met(target)


@pytest.mark.parametrize("name", ["ES1", "ES2", "ES3", "ES4"])
def test_every_side_on_sqlite_handles_what_it_must(name: str, tmp_path: Path) -> None:
    _check(peer.run(_tiny(name), 1, tmp_path, lambda _: None))


@pytest.mark.parametrize("name", ["PGES1", "PGES2", "PGES3", "PGES4"])
@pytest.mark.usefixtures("bench_database")
def test_every_side_on_postgres_handles_what_it_must(name: str, tmp_path: Path) -> None:
    _check(peer.run(_tiny(name), 1, tmp_path, lambda _: None))


def test_the_blocking_face_runs_every_workload() -> None:
    """The sync cells measure ``eskit.sync``'s CommandBus and Repository, as the async cells
    measure the async ones."""
    assert all(callable(w.sides["sync"]) for w in peer.WORKLOADS)
