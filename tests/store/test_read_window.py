"""A read of a stream with ``max_count`` shows at most ``max_count`` events while appends
run: the stream's last version and the events it leaves visible are read by one statement,
in one snapshot (SQLite and PostgreSQL). Reading them in two statements let an append land
between: the window was worked out from the older last version, the page showed the newer
events too."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import eskit
import eskit.sync
from tests import postgres

MAX_COUNT = 2


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return postgres.store_url()


def test_a_read_never_shows_more_than_max_count_events_while_appends_run(url: str) -> None:
    with eskit.sync.open_store(url) as store:
        store.append("capped-1", [eskit.NewEvent("Added", {}) for _ in range(MAX_COUNT + 1)])
        store.set_stream_metadata("capped-1", eskit.StreamMetadata(max_count=MAX_COUNT))
        stop = threading.Event()

        def append() -> None:
            while not stop.is_set():
                store.append("capped-1", [eskit.NewEvent("Added", {})])

        appender = threading.Thread(target=append)
        appender.start()
        seen: list[list[int]] = []
        try:
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                forwards = [e.version for e in store.read_stream("capped-1")]
                backwards = [e.version for e in store.read_stream("capped-1", backwards=True)]
                seen += [forwards, backwards[::-1]]
        finally:
            stop.set()
            appender.join()

        wrong = [versions for versions in seen if len(versions) != MAX_COUNT]
        assert not wrong, f"{len(wrong)} of {len(seen)} reads showed another count: {wrong[:3]}"
        assert all(b == a + 1 for a, b in seen), "each read shows consecutive versions"
        assert (store.stream_version("capped-1") or 0) > MAX_COUNT + 10  # appends did run
