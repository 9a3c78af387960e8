"""The LISTEN connection stays up for as long as a subscription waits, however long its
poll interval, closes once nobody waits any more, and wakes the waiters when it begins."""

from __future__ import annotations

import threading
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


def test_waiters_are_woken_once_listen_begins() -> None:
    """A wait looks at the head, then sleeps until a NOTIFY or its poll: a commit between
    that look and the LISTEN would be slept through, so LISTEN's start wakes the waiters."""
    woken = threading.Event()
    listener = Listener(database_url(), "eskit_test_listen_start", woken.set)
    try:
        with listener.waiting():  # no NOTIFY is ever sent on this channel
            assert woken.wait(10)
    finally:
        listener.close()
