"""The LISTEN connection stays up for as long as a subscription waits, however long its
poll interval, and closes once nobody waits any more."""

from __future__ import annotations

import time

import pytest

from eskit.store import postgres_listen
from eskit.store.postgres_listen import Listener
from tests.postgres import database_url


def test_a_wait_longer_than_the_idle_time_keeps_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres_listen, "_LISTEN_IDLE", 0.05)
    listener = Listener(database_url(), "eskit_test_listen", lambda: None)
    try:
        with listener.waiting():
            time.sleep(0.2)  # four idle times: a wait still going on
            assert listener._wanted()
        assert listener._wanted()  # just ended: still within the idle time
        time.sleep(0.2)
        assert not listener._wanted()
    finally:
        listener.close()
