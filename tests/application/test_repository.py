"""The repository on every backend: load (snapshot + tail), time travel, save with the
expected version, and snapshots taken in the background (correctness.md §6)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eskit
from eskit.application import Repository
from eskit.domain import Aggregate, EventRegistry, Model, applies, struct_snapshots
from eskit.errors import AggregateNotFound
from eskit.store.model import Snapshot
from tests.application.conftest import ManualClock

pytestmark = pytest.mark.anyio


@dataclasses.dataclass(frozen=True)
class Added:
    amount: int


@dataclasses.dataclass(frozen=True)
class Multiplied:
    factor: int


@dataclasses.dataclass(frozen=True)
class Named:
    name: str


events = EventRegistry()
events.register("Added")(Added)
events.register("Multiplied")(Multiplied)
events.register("Named")(Named)


@dataclasses.dataclass(frozen=True)
class Tally:
    """Order matters (adding and multiplying do not commute), so a snapshot folded wrongly,
    or a tail applied twice or skipped, shows in the value."""

    value: int = 0
    name: str = ""
    events: int = 0


def evolve(state: Tally, event: Any) -> Tally:
    match event:
        case Added(amount=amount):
            state = dataclasses.replace(state, value=state.value + amount)
        case Multiplied(factor=factor):
            state = dataclasses.replace(state, value=state.value * factor)
        case Named(name=name):
            state = dataclasses.replace(state, name=name)
    return dataclasses.replace(state, events=state.events + 1)


def tally(snapshot_every: int | None = None, snapshot_version: int = 1) -> Model[Tally]:
    return Model(
        category="tally",
        initial_state=Tally,
        evolve=evolve,
        snapshot_every=snapshot_every,
        snapshot_version=snapshot_version,
        **struct_snapshots(Tally),
    )


HISTORY: list[object] = [Added(2), Multiplied(10), Named("till"), Added(-5), Multiplied(3)]
"""Values after each event: 2, 20, 20, 15, 45."""


class TallyAggregate(Aggregate):
    """The same tally in the class style."""

    category = "tally"
    snapshot_every = 2

    value: int
    name: str
    events: int

    def __init__(self) -> None:
        self.value, self.name, self.events = 0, "", 0

    @applies(Added)
    def _added(self, event: Added) -> None:
        self.value, self.events = self.value + event.amount, self.events + 1

    @applies(Multiplied)
    def _multiplied(self, event: Multiplied) -> None:
        self.value, self.events = self.value * event.factor, self.events + 1

    @applies(Named)
    def _named(self, event: Named) -> None:
        self.name, self.events = event.name, self.events + 1


class ReadCounter:
    """Counts the events the repository reads from the store, and where reads start."""

    def __init__(self, store: eskit.EventStore) -> None:
        self.events = 0
        self.from_versions: list[int | None] = []
        read_stream = store.read_stream

        async def counting(
            stream: str,
            from_version: int | None = None,
            backwards: bool = False,
            limit: int | None = None,
        ) -> AsyncIterator[eskit.RecordedEvent]:
            self.from_versions.append(from_version)
            async for event in read_stream(stream, from_version, backwards, limit):
                self.events += 1
                yield event

        read_from_snapshot = store.read_from_snapshot

        async def counting_after_snapshot(
            stream: str, snapshot_version: int, max_version: int | None = None
        ) -> tuple[eskit.Snapshot | None, AsyncIterator[eskit.RecordedEvent]]:
            snapshot, events = await read_from_snapshot(stream, snapshot_version, max_version)

            async def counted() -> AsyncIterator[eskit.RecordedEvent]:
                """A read that finds no event after the snapshot is not counted as one."""
                first = True
                async for event in events:
                    if first:
                        self.from_versions.append(
                            None if snapshot is None else snapshot.version + 1
                        )
                        first = False
                    self.events += 1
                    yield event

            return snapshot, counted()

        setattr(store, "read_stream", counting)  # noqa: B010 (mypy forbids assigning a method)
        setattr(store, "read_from_snapshot", counting_after_snapshot)  # noqa: B010


async def save_one_by_one(
    repository: Repository[Any], aggregate_id: str, history: list[object]
) -> None:
    """Save each event as its own command would: load, evolve, save with the state."""
    for event in history:
        loaded = await repository.load(aggregate_id, missing_ok=True)
        state = repository.model.replay([event], loaded.state)
        await repository.save(aggregate_id, [event], loaded.expected_version, state=state)


async def stream_events(store: eskit.EventStore, stream: str) -> list[eskit.RecordedEvent]:
    return [e async for e in store.read_stream(stream)]


# -- load and save ------------------------------------------------------------------------------


async def test_an_aggregate_without_events_is_not_found(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally())

    with pytest.raises(AggregateNotFound, match="'tally-7'") as raised:
        await repository.load("7")

    assert raised.value.stream == "tally-7"


async def test_missing_ok_loads_the_initial_state_at_no_version(store: eskit.EventStore) -> None:
    loaded = await Repository(store, events, tally()).load("7", missing_ok=True)

    assert (loaded.state, loaded.version, loaded.expected_version) == (
        Tally(),
        None,
        eskit.NO_STREAM,
    )


async def test_saved_events_load_as_the_state_they_evolve_to(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally())

    result = await repository.save("7", HISTORY, eskit.NO_STREAM)
    loaded = await repository.load("7")

    assert result is not None
    assert (result.last_version, result.count) == (4, 5)
    assert (loaded.state, loaded.version, loaded.expected_version) == (Tally(45, "till", 5), 4, 4)


async def test_saving_no_events_writes_nothing(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally())

    assert await repository.save("7", [], eskit.NO_STREAM) is None
    assert await store.stream_version("tally-7") is None


async def test_a_stale_expected_version_is_refused_and_nothing_is_written(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally())
    await repository.save("7", HISTORY[:2], eskit.NO_STREAM)
    stale = await repository.load("7")
    await repository.save("7", [Added(1)], stale.expected_version)  # someone else, first

    with pytest.raises(eskit.WrongExpectedVersion) as raised:
        await repository.save("7", [Named("mine"), Added(100)], stale.expected_version)

    assert (raised.value.stream, raised.value.expected, raised.value.actual) == ("tally-7", 1, 2)
    assert [e.type for e in await stream_events(store, "tally-7")] == [
        "Added",
        "Multiplied",
        "Added",
    ]
    assert (await repository.load("7")).state == Tally(21, "", 3)


async def test_creating_an_aggregate_that_exists_is_refused(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally())
    await repository.save("7", [Added(1)], eskit.NO_STREAM)

    with pytest.raises(eskit.WrongExpectedVersion, match="'tally-7'"):
        await repository.save("7", [Added(2)], eskit.NO_STREAM)

    assert (await repository.load("7")).state == Tally(1, "", 1)


async def test_saving_again_with_the_same_ids_is_an_idempotent_retry(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally())
    ids = [uuid.uuid4(), uuid.uuid4()]

    first = await repository.save("7", HISTORY[:2], eskit.NO_STREAM, ids=ids)
    again = await repository.save("7", HISTORY[:2], eskit.NO_STREAM, ids=ids)

    assert first == again
    assert [e.id for e in await stream_events(store, "tally-7")] == ids


# -- time travel ------------------------------------------------------------------------------


async def test_loading_at_a_version_replays_up_to_it(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally())
    await repository.save("7", HISTORY, eskit.NO_STREAM)

    values = [(await repository.load("7", version=k)).state.value for k in range(5)]
    past_the_end = await repository.load("7", version=99)

    assert values == [2, 20, 20, 15, 45]
    assert (await repository.load("7", version=2)).version == 2
    assert (past_the_end.state.value, past_the_end.version) == (45, 4)


async def test_loading_at_a_time_replays_the_events_recorded_until_then(
    store: eskit.EventStore, clock: ManualClock
) -> None:
    repository = Repository(store, events, tally())
    times = []
    for event in HISTORY:
        times.append(clock.advance(60))
        await repository.save("7", [event], eskit.ANY)

    exactly = [(await repository.load("7", at=t)).state.value for t in times]
    between = await repository.load("7", at=times[2] + (times[3] - times[2]) / 2)

    assert exactly == [2, 20, 20, 15, 45]
    assert (between.state.value, between.version) == (20, 2)


async def test_loading_at_a_time_before_the_first_event_finds_nothing(
    store: eskit.EventStore, clock: ManualClock
) -> None:
    repository = Repository(store, events, tally())
    before = clock.now
    clock.advance(1)
    await repository.save("7", HISTORY, eskit.NO_STREAM)

    with pytest.raises(AggregateNotFound):
        await repository.load("7", at=before)
    assert (await repository.load("7", at=before, missing_ok=True)).version is None


# -- snapshots --------------------------------------------------------------------------------


async def test_snapshots_are_taken_every_n_events_after_the_commit(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))

    await save_one_by_one(repository, "7", HISTORY[:1])
    await repository.wait_for_snapshots()
    assert await store.load_snapshot("tally-7", 1) is None

    await save_one_by_one(repository, "7", HISTORY[1:])
    await repository.wait_for_snapshots()
    snapshot = await store.load_snapshot("tally-7", 1)
    older = await store.load_snapshot("tally-7", 1, max_version=2)

    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (3, {"value": 15, "name": "till", "events": 4})
    assert older is not None
    assert (older.version, older.state) == (1, {"value": 20, "name": "", "events": 2})
    assert repository.snapshot_failures == 0


async def test_a_batch_crossing_a_multiple_of_n_is_snapshot_at_its_last_event(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=3))

    await repository.save("7", HISTORY[:4], eskit.NO_STREAM, state=tally().replay(HISTORY[:4]))
    await repository.wait_for_snapshots()
    snapshot = await store.load_snapshot("tally-7", 1)

    assert snapshot is not None
    assert (snapshot.version, snapshot.state["value"]) == (3, 15)


async def test_no_snapshot_is_taken_without_the_state(store: eskit.EventStore) -> None:
    repository = Repository(store, events, tally(snapshot_every=1))

    await repository.save("7", HISTORY, eskit.NO_STREAM)
    await repository.wait_for_snapshots()

    assert await store.load_snapshot("tally-7", 1) is None


async def test_loading_with_a_snapshot_reads_only_the_events_after_it(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))
    await save_one_by_one(repository, "7", HISTORY)
    await repository.wait_for_snapshots()
    reads = ReadCounter(store)

    loaded = await repository.load("7")

    assert (loaded.state, loaded.version) == (Tally(45, "till", 5), 4)
    assert (reads.from_versions, reads.events) == ([4], 1)


async def test_a_snapshot_at_the_last_event_needs_no_events_at_all(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))
    await save_one_by_one(repository, "7", HISTORY[:4])
    await repository.wait_for_snapshots()
    reads = ReadCounter(store)

    loaded = await repository.load("7")

    assert (loaded.state, loaded.version) == (Tally(15, "till", 4), 3)
    assert reads.events == 0


async def test_time_travel_before_the_newest_snapshot_replays_correctly(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))
    await save_one_by_one(repository, "7", HISTORY)
    await repository.wait_for_snapshots()  # snapshots at versions 1 and 3
    reads = ReadCounter(store)

    states = [(await repository.load("7", version=k)).state for k in range(5)]

    assert states == [tally().replay(HISTORY[: k + 1]) for k in range(5)]
    assert reads.from_versions == [None, 2, 4]  # versions 1 and 3 load from snapshots alone


async def test_time_travel_by_time_ignores_snapshots(
    store: eskit.EventStore, clock: ManualClock
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))
    times = []
    for event in HISTORY:
        times.append(clock.advance(1))
        await save_one_by_one(repository, "7", [event])
    await repository.wait_for_snapshots()

    states = [(await repository.load("7", at=t)).state for t in times]

    assert states == [tally().replay(HISTORY[: k + 1]) for k in range(5)]


async def test_a_snapshot_of_another_snapshot_version_is_ignored(
    store: eskit.EventStore,
) -> None:
    await save_one_by_one(Repository(store, events, tally(snapshot_every=2)), "7", HISTORY)
    # Version 2 of the code counts names as 100 and bumps snapshot_version.

    def evolve_v2(state: Tally, event: Any) -> Tally:
        state = evolve(state, event)
        return (
            dataclasses.replace(state, value=state.value + 100)
            if isinstance(event, Named)
            else state
        )

    model_v2 = dataclasses.replace(tally(snapshot_every=2, snapshot_version=2), evolve=evolve_v2)
    repository = Repository(store, events, model_v2)
    await store.save_snapshot(Snapshot("tally-7", 4, 1, {"value": -1, "name": "?", "events": 0}))
    reads = ReadCounter(store)

    loaded = await repository.load("7")

    assert (reads.from_versions, reads.events) == ([None], 5)
    assert (loaded.state, loaded.version) == (model_v2.replay(HISTORY), 4)
    assert loaded.state.value == 345


async def test_a_failing_snapshot_store_never_fails_a_save(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(snapshot: Snapshot) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_snapshot", broken)
    repository = Repository(store, events, tally(snapshot_every=1))

    await save_one_by_one(repository, "7", HISTORY[:2])
    await repository.wait_for_snapshots()

    assert repository.snapshot_failures == 2
    assert (await repository.load("7")).state == Tally(20, "", 2)


async def test_a_state_that_cannot_be_snapshot_never_fails_a_save(
    store: eskit.EventStore,
) -> None:
    def refuse(state: Tally) -> dict[str, Any]:
        raise ValueError("no snapshot today")

    model = dataclasses.replace(tally(snapshot_every=1), to_snapshot=refuse)
    repository = Repository(store, events, model)

    await save_one_by_one(repository, "7", HISTORY[:2])
    await repository.wait_for_snapshots()

    assert repository.snapshot_failures == 2
    assert await store.load_snapshot("tally-7", 1) is None
    assert (await repository.load("7")).version == 1


async def test_the_snapshot_is_the_state_at_save_time(store: eskit.EventStore) -> None:
    repository = Repository(store, events, TallyAggregate.model())
    aggregate = TallyAggregate()
    aggregate.record(Added(1))
    aggregate.record(Added(2))

    await repository.save("7", aggregate.take_pending(), eskit.NO_STREAM, state=aggregate)
    aggregate.record(Multiplied(100))  # the caller goes on before the snapshot is stored
    await repository.wait_for_snapshots()
    snapshot = await store.load_snapshot("tally-7", 1)

    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (1, {"value": 3, "name": "", "events": 2})


async def test_an_event_appended_while_a_snapshot_is_taken_is_applied_once(
    store: eskit.EventStore,
) -> None:
    repository = Repository(store, events, tally(snapshot_every=2))
    await save_one_by_one(repository, "7", HISTORY[:1])
    loaded = await repository.load("7")
    state = tally().replay(HISTORY[1:2], loaded.state)

    await repository.save("7", HISTORY[1:2], loaded.expected_version, state=state)
    await repository.save("7", [Added(1)], 1)  # before the snapshot at version 1 is stored
    await repository.wait_for_snapshots()
    reloaded = await repository.load("7")

    assert (reloaded.state, reloaded.version) == (Tally(21, "", 3), 2)


@pytest.mark.parametrize(
    "target", [tally(snapshot_every=2), TallyAggregate.model()], ids=["decider", "class"]
)
async def test_both_styles_load_save_and_snapshot_alike(
    store: eskit.EventStore, target: Model[Any]
) -> None:
    repository = Repository(store, events, target)

    await save_one_by_one(repository, "7", HISTORY)
    await repository.wait_for_snapshots()
    snapshot = await store.load_snapshot("tally-7", 1)
    reads = ReadCounter(store)
    loaded = await repository.load("7")

    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (3, {"value": 15, "name": "till", "events": 4})
    assert target.to_snapshot is not None
    assert (target.to_snapshot(loaded.state), loaded.version) == (
        {"value": 45, "name": "till", "events": 5},
        4,
    )
    assert reads.events == 1


# -- properties (T6.1) ------------------------------------------------------------------------

some_events = st.lists(
    st.one_of(
        st.builds(Added, st.integers(-100, 100)),
        st.builds(Multiplied, st.integers(-3, 3)),
        st.builds(Named, st.sampled_from(["a", "b", "desk"])),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(history=some_events)
async def test_a_snapshot_at_any_version_plus_the_tail_equals_a_full_replay(
    history: list[object],
) -> None:
    full = tally().replay(history)
    async with eskit.open_store("memory://") as store:
        await Repository(store, events, tally()).save("7", history, eskit.NO_STREAM)
        for k in range(len(history)):
            # A snapshot_version of its own per k, so the snapshot at k is the only one.
            model = tally(snapshot_every=1, snapshot_version=k + 1)
            assert model.to_snapshot is not None
            state_at_k = model.to_snapshot(model.replay(history[: k + 1]))
            await store.save_snapshot(Snapshot("tally-7", k, k + 1, state_at_k))
            reads = ReadCounter(store)

            loaded = await Repository(store, events, model).load("7")

            assert (loaded.state, loaded.version) == (full, len(history) - 1)
            assert reads.events == len(history) - 1 - k


@settings(max_examples=40, deadline=None)
@given(
    history=some_events,
    every=st.integers(1, 5),
    cuts=st.lists(st.integers(1, 4), min_size=20, max_size=20),
)
async def test_the_snapshot_policy_never_changes_what_loads(
    history: list[object], every: int, cuts: list[int]
) -> None:
    model = tally(snapshot_every=every)
    async with eskit.open_store("memory://") as store:
        repository = Repository(store, events, model)
        saved = 0
        for cut in cuts:  # batches of random sizes, as commands would save them
            batch = history[saved : saved + cut]
            if not batch:
                break
            loaded = await repository.load("7", missing_ok=True)
            state = model.replay(batch, loaded.state)
            await repository.save("7", batch, loaded.expected_version, state=state)
            saved += len(batch)
        await repository.wait_for_snapshots()

        for version in range(len(history)):
            at_version = await repository.load("7", version=version)
            assert at_version.state == model.replay(history[: version + 1])
        assert (await repository.load("7")).state == model.replay(history)
        assert repository.snapshot_failures == 0
