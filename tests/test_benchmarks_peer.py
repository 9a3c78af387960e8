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


@pytest.mark.parametrize("name", ["ES1", "ES2", "ES2c", "ES3", "ES4"])
def test_every_side_on_sqlite_handles_what_it_must(name: str, tmp_path: Path) -> None:
    _check(peer.run(_tiny(name), 1, tmp_path, lambda _: None))


@pytest.mark.parametrize("name", ["PGES1", "PGES2", "PGES2c", "PGES3", "PGES4"])
@pytest.mark.usefixtures("bench_database")
def test_every_side_on_postgres_handles_what_it_must(name: str, tmp_path: Path) -> None:
    _check(peer.run(_tiny(name), 1, tmp_path, lambda _: None))


def test_the_blocking_face_runs_every_workload() -> None:
    """The sync cells measure ``eskit.sync``'s CommandBus and Repository, as the async cells
    measure the async ones."""
    assert all(callable(w.sides["sync"]) for w in peer.WORKLOADS)


def test_the_cached_variants_sit_beside_the_defaults_and_differ_only_in_the_peer() -> None:
    """ES2c / PGES2c come right after ES2 / PGES2 and run the same eskit and raw sides; only
    the peer's side asks for its aggregate cache (ES2 / PGES2 keep the peer's defaults)."""
    names = [w.name for w in peer.WORKLOADS]
    for prefix in ("ES", "PGES"):
        plain = peer.WORKLOADS[names.index(f"{prefix}2")]
        cached = peer.WORKLOADS[names.index(f"{prefix}2") + 1]
        assert cached.name == f"{prefix}2c"
        for face in ("async", "sync"):
            assert cached.sides[face] is plain.sides[face]
        assert plain.targets
        assert not cached.targets


def test_the_peer_cache_is_the_safe_one_and_refused_otherwise(tmp_path: Path) -> None:
    """With the cache on, the peer keeps eskit's default number of aggregates and still
    fast-forwards them: an event another application (another process) appended is applied
    on the next get. A repository whose cache is not what was asked is refused."""
    from benchmarks import peer_eventsourcing as es

    from eskit.application.state_cache import STATE_CACHE

    with es._place("sqlite", tmp_path) as env:
        with es._app(env, STATE_CACHE) as app, es._app(env) as other:
            assert app.repository.cache is not None
            assert other.repository.cache is None
            invoice = es.Invoice("inv-1", "cust-1", "EUR", es.DUE)
            app.save(invoice)
            assert app.repository.get(invoice.id).version == 1  # now kept
            elsewhere: es.Invoice = other.repository.get(invoice.id)
            elsewhere.add_line("sku-1", 5, "EUR")
            other.save(elsewhere)
            kept: es.Invoice = app.repository.get(invoice.id)
            assert (kept.version, kept.total) == (2, 5)
        unsafe = es.Invoicing(
            env={**env, "AGGREGATE_CACHE_MAXSIZE": "1000", "AGGREGATE_CACHE_FASTFORWARD": "n"}
        )
        try:
            stale: es.Invoice = unsafe.repository.get(invoice.id)  # now kept, never fast-forwarded
            other_app = es.Invoicing(env=env)
            try:
                more: es.Invoice = other_app.repository.get(invoice.id)
                more.add_line("sku-2", 7, "EUR")
                other_app.save(more)
            finally:
                other_app.close()
            assert unsafe.repository.get(invoice.id).version == stale.version == 2  # stale
            with pytest.raises(RuntimeError, match="fast-forwarded"):
                es._cached(unsafe, STATE_CACHE)
        finally:
            unsafe.close()
        asked_none = es._app({**env, "AGGREGATE_CACHE_MAXSIZE": "5"})
        with pytest.raises(RuntimeError, match="none was asked"), asked_none:
            pass
