"""The states the command bus keeps between commands (``eskit.application.state_cache``):
used only when the store vouches that nothing changed under them, caught up with what
others appended, never shared by two commands, never kept for encrypted events, bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eskit
import eskit.sync
from eskit.application import CommandBus
from eskit.application.state_cache import StateCache
from eskit.privacy import Keyring, MasterKey, MemoryKeyStore
from eskit.sync import SyncStore
from tests import postgres
from tests.application.test_commands import (
    Account,
    Deposit,
    Withdraw,
    Withdrew,
    account_decider,
    events,
    handle_account,
)
from tests.privacy import events as private


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store of the test's own on each backend that keeps states (``Engine.catches_up``)."""
    if request.param == "postgres":
        return postgres.store_url()
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
def stores(url: str) -> Iterator[tuple[SyncStore, SyncStore]]:
    """Two stores on one database: two processes, each with its own bus and kept states."""
    with eskit.sync.open_store(url) as one, eskit.sync.open_store(url) as other:
        yield one, other


UNSNAPSHOTTED = dataclasses.replace(account_decider, snapshot_every=None)
"""The account without snapshots: a load reads exactly the events its read rules leave."""


def accounts(store: SyncStore, state_cache: int = 1000) -> eskit.sync.CommandBus:
    bus = eskit.sync.CommandBus(store, events, state_cache=state_cache)
    bus.register(Deposit, UNSNAPSHOTTED, aggregate_id=lambda c: c.account_id)
    bus.register(Withdraw, UNSNAPSHOTTED, aggregate_id=lambda c: c.account_id)
    return bus


def balance(store: SyncStore, account_id: str) -> tuple[int, int | None]:
    loaded = eskit.sync.Repository(store, events, UNSNAPSHOTTED).load(account_id)
    return loaded.state.balance, loaded.version


def test_a_kept_state_saves_the_next_command_its_load(
    stores: tuple[SyncStore, SyncStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = stores
    bus = accounts(store)
    bus.send(Deposit("a", 5))
    reads: list[str] = []
    monkeypatch.setattr(store, "read_from_snapshot", lambda *a: reads.append("load"))

    bus.send(Withdraw("a", 2))  # decided on the kept state: nothing loaded

    assert reads == []
    assert len(bus.states) == 1
    monkeypatch.undo()
    assert balance(store, "a") == (3, 1)


def test_events_another_process_appended_are_applied_to_the_kept_state(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    one, other = stores
    mine, theirs = accounts(one), accounts(other)
    mine.send(Deposit("a", 5))
    theirs.send(Deposit("a", 10))
    theirs.send(Withdraw("a", 1))

    mine.send(Withdraw("a", 14))  # refused if the kept state (5) were used as it is

    assert balance(one, "a") == (0, 3)


def test_a_stream_deleted_by_another_process_is_loaded_not_caught_up(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    one, other = stores
    mine, theirs = accounts(one), accounts(other)
    mine.send(Deposit("a", 5))
    other.delete_stream("account-a")  # soft delete: the 5 is hidden from now on
    theirs.send(Deposit("a", 1))  # the stream lives again, at version 1

    with pytest.raises(Exception, match="2 > 1"):  # the balance is 1, not 6
        mine.send(Withdraw("a", 2))
    mine.send(Withdraw("a", 1))
    assert balance(one, "a") == (0, 2)


def test_read_rules_set_by_another_process_make_the_next_command_load(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    one, other = stores
    mine = accounts(one)
    mine.send(Deposit("a", 5))
    mine.send(Deposit("a", 7))
    other.set_stream_metadata("account-a", eskit.StreamMetadata(max_count=1))

    with pytest.raises(Exception, match="8 > 7"):  # only the last deposit is visible now
        mine.send(Withdraw("a", 8))


def test_a_handler_that_fails_after_changing_the_state_leaves_no_trace(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    store, _ = stores
    bus = eskit.sync.CommandBus(store, events)

    def deposit_then_fail(command: Deposit, account: Account) -> None:
        account.deposit(command.amount)  # applied to the state, then the handler fails
        raise RuntimeError("refused after the fact")

    bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=handle_account)
    bus.register(Withdraw, Account, aggregate_id=lambda c: c.account_id, handle=handle_account)
    bus.send(Deposit("a", 5))
    failing = eskit.sync.CommandBus(store, events)
    failing.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=handle_account)
    failing.states = bus.states  # share the kept states with a bus whose handler fails
    failing._routes[Deposit] = dataclasses.replace(
        failing._routes[Deposit], handle=deposit_then_fail
    )

    with pytest.raises(RuntimeError, match="after the fact"):
        failing.send(Deposit("a", 100))
    with pytest.raises(Exception, match="6 > 5"):
        bus.send(Withdraw("a", 6))
    bus.send(Withdraw("a", 5))
    assert len(bus.states) == 1


@pytest.mark.anyio
async def test_concurrent_commands_on_one_aggregate_never_share_a_state(url: str) -> None:
    async with eskit.open_store(url) as store:
        bus = CommandBus(store, events, backoff=0, max_attempts=50)
        bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=handle_account)
        await bus.send(Deposit("a", 1))
        for _ in range(5):
            await asyncio.gather(*(bus.send(Deposit("a", 1)) for _ in range(8)))
        loaded = await bus.repository(Account.model()).load("a")
        assert (loaded.state.balance, loaded.version) == (41, 40)


def test_states_of_events_that_may_hold_encrypted_fields_are_never_kept(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    store, _ = stores
    registry = private.registry()
    registry.encrypt_with(Keyring(MemoryKeyStore(), MasterKey.generate()))
    bus = eskit.sync.CommandBus(store, registry)

    def rename(command: Any, customer: private.Customer) -> list[object]:
        return [private.CustomerRenamed(command)]

    bus.register(str, private.Customer, aggregate_id=lambda c: "c-1", handle=rename)
    bus.send("Ada")
    bus.send("Grace")

    assert len(bus.states) == 0


def test_a_store_that_cannot_vouch_for_a_state_keeps_none() -> None:
    with eskit.sync.open_store("memory://") as store:
        bus = accounts(store)
        bus.send(Deposit("a", 5))
        bus.send(Withdraw("a", 5))
        assert bus.states.size == 0
        assert len(bus.states) == 0
        assert balance(store, "a") == (0, 1)


def test_at_most_state_cache_aggregates_are_kept_the_least_recently_used_dropped(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    store, _ = stores
    bus = accounts(store, state_cache=2)
    for account_id in ("a", "b", "c", "b"):
        bus.send(Deposit(account_id, 1))
    assert len(bus.states) == 2
    assert bus.states.take("account-a") is None
    kept = bus.states.take("account-b")
    assert kept is not None
    assert (kept[0], kept[1].balance) == (1, 2)


def test_state_cache_zero_keeps_nothing(stores: tuple[SyncStore, SyncStore]) -> None:
    store, _ = stores
    bus = accounts(store, state_cache=0)
    bus.send(Deposit("a", 5))
    assert len(bus.states) == 0


@pytest.mark.parametrize(("size", "error"), [(-1, ValueError), ("5", TypeError), (True, TypeError)])
def test_a_bad_state_cache_size_is_refused(size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="state_cache"):
        StateCache(size)


# -- the async face: a plain handler's command in one hand-off ---------------------------------


@pytest.mark.anyio
async def test_a_plain_handlers_command_costs_the_loop_one_hand_off(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with eskit.open_store(url) as store:
        bus = CommandBus(store, events)
        bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=handle_account)
        await bus.send(Deposit("a", 1))
        bus.states.clear()  # the next command loads and appends: both in one visit
        hand_offs: list[str] = []
        to_thread = asyncio.to_thread

        async def counted(function: Any, /, *args: Any) -> Any:
            hand_offs.append(getattr(function, "__name__", "?"))
            return await to_thread(function, *args)

        async def queued(*args: Any) -> Any:
            hand_offs.append("append_many_async")
            raise AssertionError("the append is made in the worker thread")

        monkeypatch.setattr(asyncio, "to_thread", counted)
        monkeypatch.setattr(store.engine, "append_many_async", queued)
        loop_thread = threading.get_ident()
        threads: list[int] = []

        def deposit(command: Deposit, account: Account) -> None:
            threads.append(threading.get_ident())
            account.deposit(command.amount)

        bus._routes[Deposit] = dataclasses.replace(bus._routes[Deposit], handle=deposit)
        bus._plain.clear()

        result = await bus.send(Deposit("a", 2))

        assert (result.version, hand_offs) == (1, ["_in_thread"])
        assert len(threads) == 1
        assert threads[0] != loop_thread  # the handler ran in the worker thread


@pytest.mark.anyio
async def test_an_async_handler_runs_on_the_loop(url: str) -> None:
    async with eskit.open_store(url) as store:
        bus = CommandBus(store, events)
        threads: list[int] = []

        async def deposit(command: Deposit, account: Account) -> None:
            threads.append(threading.get_ident())
            account.deposit(command.amount)

        bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=deposit)
        await bus.send(Deposit("a", 1))
        await bus.send(Deposit("a", 2))

        assert threads == [threading.get_ident()] * 2
        loaded = await bus.repository(Account.model()).load("a")
        assert loaded.state.balance == 3


@pytest.mark.anyio
async def test_a_command_cancelled_while_its_handler_runs_in_the_thread_appends_nothing(
    url: str,
) -> None:
    async with eskit.open_store(url) as store:
        bus = CommandBus(store, events)
        started, release = threading.Event(), threading.Event()

        def slow_deposit(command: Deposit, account: Account) -> None:
            started.set()
            release.wait(10)
            account.deposit(command.amount)

        bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=slow_deposit)
        sending = asyncio.create_task(bus.send(Deposit("a", 1)))
        assert await asyncio.to_thread(started.wait, 10)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        release.set()
        for _ in range(50):  # the worker thread finishes the flow, up to its append
            await asyncio.sleep(0.02)
        assert await store.stream_version("account-a") is None
        assert len(bus.states) == 0


# -- the engine's side: events_after ------------------------------------------------------------


def test_events_after_gives_the_newer_events_of_a_stream_that_never_hid_one(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    store, _ = stores
    event = eskit.NewEvent("Deposited", {"amount": 1})
    store.append("s-1", [event, event, event], eskit.NO_STREAM)
    engine = store.engine

    assert [e.version for e in engine.events_after("s-1", 0, 10) or []] == [1, 2]
    assert engine.events_after("s-1", 2, 10) == []
    assert engine.events_after("never-written", 5, 10) == []
    assert engine.events_after("s-1", -1, 2) is None  # more than `count` follow
    store.set_stream_metadata("s-1", eskit.StreamMetadata())  # a rules row, even empty
    assert engine.events_after("s-1", 2, 10) is None
    store.tombstone_stream("s-1")
    with pytest.raises(eskit.StreamDeleted):
        engine.events_after("s-1", 2, 10)


def test_the_event_loop_never_waits_on_sqlite_when_commands_run(tmp_path: Path) -> None:
    """As tests/store's loop test, through the async bus: creates, commands that load or
    catch up, conflicts between tasks on the same aggregates (retries, pauses) and
    snapshots make no call into ``sqlite3`` on the loop's thread."""
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and isinstance(
            getattr(arg, "__self__", None), sqlite3.Connection | sqlite3.Cursor
        ):
            calls.append(arg.__qualname__)

    async def main() -> None:
        async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
            bus = CommandBus(store, events, backoff=0, max_attempts=100)
            bus.register(
                Deposit, Account, aggregate_id=lambda c: c.account_id, handle=handle_account
            )
            sys.setprofile(profile)  # this thread only: the loop's
            try:
                await asyncio.gather(*(bus.send(Deposit(f"a-{n % 10}", 1)) for n in range(200)))
            finally:
                sys.setprofile(None)
            loaded = await bus.repository(Account.model()).load("a-3")
            assert (loaded.state.balance, loaded.version) == (20, 19)

    asyncio.run(main())
    assert calls == []


@pytest.mark.anyio
async def test_on_the_memory_store_a_plain_handler_runs_on_the_loop() -> None:
    async with eskit.open_store("memory://") as store:
        bus = CommandBus(store, events)
        threads: list[int] = []

        def deposit(command: Deposit, account: Account) -> None:
            threads.append(threading.get_ident())
            account.deposit(command.amount)

        bus.register(Deposit, Account, aggregate_id=lambda c: c.account_id, handle=deposit)
        await bus.send(Deposit("a", 1))
        await bus.send(Deposit("a", 2))

        assert threads == [threading.get_ident()] * 2


def test_no_state_is_kept_after_a_command_sent_with_a_command_id(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    """Its append may have been the replay of a concurrent retry's, whose events (a time,
    say) may differ from what this one decided: the next command loads."""
    store, _ = stores
    bus = accounts(store)
    bus.send(Deposit("a", 5), command_id=uuid.uuid4())
    assert len(bus.states) == 0
    bus.send(Deposit("a", 1))
    assert len(bus.states) == 1
    assert balance(store, "a") == (6, 1)


# -- the kept state decided on unread, its append made untouched ---------------------------------


def counted(store: SyncStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reads a command makes of ``store`` (and its appends), by name, as they go through
    to the real store."""
    calls: list[str] = []
    engine = store.engine
    for owner, name in (
        (store, "read_stream"),
        (store, "read_from_snapshot"),
        (engine, "events_after"),
        (engine, "append_many"),
    ):
        real = getattr(owner, name)

        def call(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)
    return calls


def test_a_command_on_a_kept_aggregate_reads_nothing(
    stores: tuple[SyncStore, SyncStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = stores
    bus = accounts(store)
    bus.send(Deposit("a", 5))
    calls = counted(store, monkeypatch)

    bus.send(Withdraw("a", 2))
    bus.send(Deposit("a", 4))

    assert calls == ["append_many", "append_many"]
    monkeypatch.undo()
    assert balance(store, "a") == (7, 2)


def test_an_event_another_store_appended_refuses_the_unread_append_then_is_caught_up(
    stores: tuple[SyncStore, SyncStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = stores
    mine, theirs = accounts(one), accounts(other)
    mine.send(Deposit("a", 5))
    theirs.send(Deposit("a", 10))
    calls = counted(one, monkeypatch)

    mine.send(Deposit("a", 1))  # decided on the kept 5, refused; caught up (15), again

    assert calls == ["append_many", "events_after", "append_many"]
    monkeypatch.undo()
    assert balance(one, "a") == (16, 2)
    mine.send(Withdraw("a", 16))  # kept: 16, unread
    assert balance(other, "a") == (0, 3)


def test_a_handler_deciding_nothing_on_the_kept_state_decides_on_the_current_one(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    one, other = stores
    mine, theirs = accounts(one), accounts(other)

    def sweep(command: Withdraw, state: Any) -> list[object]:
        """Withdraw everything, once there is at least ``amount``."""
        return [Withdrew(state.balance)] if state.balance >= command.amount else []

    mine._routes[Withdraw] = dataclasses.replace(mine._routes[Withdraw], handle=sweep)
    mine.send(Deposit("a", 5))
    theirs.send(Deposit("a", 10))

    result = mine.send(Withdraw("a", 12))  # nothing on the kept 5; 15 on the current

    assert [e.amount for e in result.events] == [15]
    assert balance(other, "a") == (0, 2)


def test_read_rules_another_store_sets_are_seen_and_the_stream_then_loaded_unasked(
    stores: tuple[SyncStore, SyncStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = stores
    mine = accounts(one)
    mine.send(Deposit("a", 5))
    mine.send(Deposit("a", 7))
    other.set_stream_metadata("account-a", eskit.StreamMetadata(truncate_before=1))

    with pytest.raises(Exception, match="8 > 7"):  # decided as a load sees it: 7, not 12
        mine.send(Withdraw("a", 8))
    mine.send(Withdraw("a", 1))  # loaded (the refusal told it hid events), then kept as so
    calls = counted(one, monkeypatch)
    mine.send(Withdraw("a", 1))  # loaded, no catch-up asked, no append refused

    assert calls == ["read_stream", "append_many"]
    monkeypatch.undo()
    assert balance(one, "a") == (5, 3)


@pytest.mark.anyio
async def test_a_command_on_a_kept_aggregate_costs_the_loop_one_hand_off_its_append(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with eskit.open_store(url) as store:
        bus = CommandBus(store, events)
        bus.register(Deposit, UNSNAPSHOTTED, aggregate_id=lambda c: c.account_id)
        await bus.send(Deposit("a", 1))
        hand_offs: list[str] = []
        to_thread, append_many_async = asyncio.to_thread, store.engine.append_many_async

        async def threaded(function: Any, /, *args: Any) -> Any:
            hand_offs.append(getattr(function, "__name__", "?"))
            return await to_thread(function, *args)

        def appended(*args: Any) -> Any:
            hand_offs.append("append_many_async")
            return append_many_async(*args)

        monkeypatch.setattr(asyncio, "to_thread", threaded)
        monkeypatch.setattr(store.engine, "append_many_async", appended)

        result = await bus.send(Deposit("a", 2))

        assert (result.version, hand_offs) == (1, ["append_many_async"])


@pytest.mark.anyio
async def test_on_the_async_face_a_refused_unread_append_catches_up_in_the_thread(
    url: str,
) -> None:
    async with eskit.open_store(url) as one, eskit.open_store(url) as other:
        mine, theirs = CommandBus(one, events), CommandBus(other, events)
        for bus in (mine, theirs):
            bus.register(Deposit, UNSNAPSHOTTED, aggregate_id=lambda c: c.account_id)
            bus.register(Withdraw, UNSNAPSHOTTED, aggregate_id=lambda c: c.account_id)
        await mine.send(Deposit("a", 5))
        await theirs.send(Deposit("a", 10))
        await other.set_stream_metadata("account-b", eskit.StreamMetadata(max_count=1))

        result = await mine.send(Withdraw("a", 15))  # refused on the kept 5: caught up

        assert result.version == 2
        await mine.send(Deposit("b", 1))
        await mine.send(Deposit("b", 2))  # kept, refused (b has read rules): loaded
        with pytest.raises(Exception, match="3 > 2"):  # max_count=1: only the 2 is seen
            await mine.send(Withdraw("b", 3))
