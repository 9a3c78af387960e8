"""The two aggregate styles on one engine: the class with ``@applies`` handlers, and the
functional decider. Both become a ``Model`` (initial state + evolve + snapshot codec); how
both load, save and snapshot through the repository is in tests/application."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import msgspec
import pytest

from eskit.domain import Aggregate, Decider, Model, applies, struct_snapshots


@dataclasses.dataclass(frozen=True)
class Switched:
    on: bool


@dataclasses.dataclass(frozen=True)
class Renamed:
    name: str


@dataclasses.dataclass(frozen=True)
class Relabelled:
    name: str


@dataclasses.dataclass(frozen=True)
class Dimmed:
    percent: int


@dataclasses.dataclass(frozen=True)
class Exploded:
    pass


class LampError(Exception):
    pass


class Lamp(Aggregate):
    category = "lamp"

    on: bool
    name: str
    switches: int

    def __init__(self) -> None:
        self.on, self.name, self.switches = False, "", 0

    def switch(self, on: bool) -> None:
        if on == self.on:
            raise LampError(f"the lamp is already {'on' if on else 'off'}")
        self.record(Switched(on))

    @applies(Switched)
    def _switched(self, event: Switched) -> None:
        self.on, self.switches = event.on, self.switches + 1

    @applies(Renamed, Relabelled)
    def _named(self, event: Renamed | Relabelled) -> None:
        self.name = event.name


class DimmableLamp(Lamp):
    category = "dimmable"
    snapshot_every = 10

    brightness: int

    def __init__(self) -> None:
        super().__init__()
        self.brightness = 100

    @applies(Dimmed)
    def _dimmed(self, event: Dimmed) -> None:
        self.brightness = event.percent

    @applies(Renamed)
    def _renamed_loudly(self, event: Renamed) -> None:
        self.name = event.name.upper()


# -- class style ------------------------------------------------------------------------------


def test_a_recorded_event_is_applied_at_once_and_kept_as_pending() -> None:
    lamp = Lamp()

    lamp.switch(True)

    assert lamp.on is True
    assert lamp.switches == 1
    assert lamp.take_pending() == [Switched(True)]


def test_taking_the_pending_events_empties_them() -> None:
    lamp = Lamp()
    lamp.switch(True)
    lamp.switch(False)

    assert lamp.take_pending() == [Switched(True), Switched(False)]
    assert lamp.take_pending() == []
    assert lamp.switches == 2


def test_a_refused_command_records_nothing() -> None:
    lamp = Lamp()

    with pytest.raises(LampError, match="already off"):
        lamp.switch(False)

    assert lamp.take_pending() == []


def test_instances_do_not_share_pending_events() -> None:
    first, second = Lamp(), Lamp()

    first.switch(True)

    assert second.take_pending() == []


def test_one_handler_applies_several_event_types() -> None:
    lamp = Lamp()

    lamp.record(Renamed("desk"))
    lamp.record(Relabelled("hall"))

    assert lamp.name == "hall"


def test_an_event_without_handler_is_a_type_error_naming_both() -> None:
    lamp = Lamp()

    with pytest.raises(TypeError, match="Lamp has no @applies handler for Exploded"):
        lamp.record(Exploded())

    assert lamp.take_pending() == []


def test_a_subclass_inherits_handlers_adds_its_own_and_overrides_per_event_type() -> None:
    lamp = DimmableLamp()

    lamp.switch(True)  # inherited
    lamp.record(Dimmed(40))  # its own
    lamp.record(Renamed("desk"))  # overridden
    lamp.record(Relabelled("hall"))  # inherited for this type

    assert (lamp.on, lamp.brightness, lamp.name) == (True, 40, "hall")
    lamp.record(Renamed("desk"))
    assert lamp.name == "DESK"


def test_a_subclass_handler_does_not_leak_into_the_parent() -> None:
    plain = Lamp()

    with pytest.raises(TypeError, match="Lamp has no @applies handler for Dimmed"):
        plain.record(Dimmed(10))
    plain.record(Renamed("desk"))
    assert plain.name == "desk"


def test_applies_needs_an_event_class() -> None:
    with pytest.raises(TypeError, match="at least one event class"):
        applies()


def test_the_model_of_a_class_replays_history_without_pending_events() -> None:
    model = Lamp.model()

    lamp = model.replay([Switched(True), Renamed("desk"), Switched(False)])

    assert isinstance(lamp, Lamp)
    assert (lamp.on, lamp.name, lamp.switches) == (False, "desk", 2)
    assert lamp.take_pending() == []
    assert model.stream("42") == "lamp-42"


def test_the_model_of_a_class_is_built_once_per_class() -> None:
    assert Lamp.model() is Lamp.model()
    assert DimmableLamp.model() is not Lamp.model()
    assert DimmableLamp.model().category == "dimmable"


def test_each_load_starts_from_a_fresh_initial_state() -> None:
    model = Lamp.model()
    model.replay([Switched(True)])

    assert model.replay([]).on is False


def test_class_snapshots_hold_the_annotated_attributes_including_inherited_ones() -> None:
    model = DimmableLamp.model()
    assert model.to_snapshot is not None
    assert model.from_snapshot is not None
    lamp = model.replay([Switched(True), Dimmed(30), Relabelled("hall")])

    snapshot = model.to_snapshot(lamp)
    restored = model.from_snapshot(msgspec.json.decode(msgspec.json.encode(snapshot)))

    assert snapshot == {"on": True, "name": "hall", "switches": 1, "brightness": 30}
    assert isinstance(restored, DimmableLamp)
    assert vars(restored) | {"_pending": []} == vars(lamp) | {"_pending": []}
    restored.record(Dimmed(10))  # a restored aggregate records like a fresh one
    assert restored.take_pending() == [Dimmed(10)]


def test_snapshots_without_annotated_state_are_a_type_error() -> None:
    class Blinker(Aggregate):
        category = "blinker"
        snapshot_every = 5

        def __init__(self) -> None:
            self.blinks = 0

    with pytest.raises(TypeError, match="Blinker enables snapshots but annotates no state"):
        Blinker.model()


def test_an_aggregate_without_a_category_is_a_type_error() -> None:
    class Nameless(Aggregate):
        pass

    with pytest.raises(TypeError, match="Nameless must set the class attribute `category`"):
        Nameless.model()


# -- decider style ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SwitchOn:
    pass


@dataclasses.dataclass(frozen=True)
class Rename:
    name: str


@dataclasses.dataclass(frozen=True)
class LampState:
    on: bool = False
    name: str = ""
    switches: int = 0


def decide(command: SwitchOn | Rename, state: LampState) -> list[Any]:
    match command:
        case SwitchOn():
            if state.on:
                raise LampError("the lamp is already on")
            return [Switched(True)]
        case Rename(name=name):
            return [] if name == state.name else [Renamed(name)]


def evolve(state: LampState, event: Any) -> LampState:
    match event:
        case Switched(on=on):
            return dataclasses.replace(state, on=on, switches=state.switches + 1)
        case Renamed(name=name):
            return dataclasses.replace(state, name=name)
    return state


lamp_decider: Decider[SwitchOn | Rename, LampState] = Decider(
    category="lamp",
    initial_state=LampState,
    evolve=evolve,
    decide=decide,
    snapshot_every=3,
    **struct_snapshots(LampState),
)


def test_a_decider_decides_from_the_state_its_history_evolves_to() -> None:
    state = lamp_decider.replay([Switched(True), Renamed("desk")])

    assert lamp_decider.decide(Rename("hall"), state) == [Renamed("hall")]
    assert lamp_decider.decide(Rename("desk"), state) == []
    with pytest.raises(LampError):
        lamp_decider.decide(SwitchOn(), state)


def test_a_decider_replays_on_from_a_given_state() -> None:
    halfway = lamp_decider.replay([Switched(True)])

    assert lamp_decider.replay([Renamed("desk")], halfway) == LampState(True, "desk", 1)
    assert lamp_decider.replay([]) == LampState()


def test_struct_snapshots_round_trip_a_dataclass_state() -> None:
    assert lamp_decider.to_snapshot is not None
    assert lamp_decider.from_snapshot is not None
    state = LampState(True, "desk", 4)

    snapshot = lamp_decider.to_snapshot(state)

    assert snapshot == {"on": True, "name": "desk", "switches": 4}
    assert lamp_decider.from_snapshot(snapshot) == state


@dataclasses.dataclass(frozen=True)
class TaggedState:
    tags: tuple[str, ...] = ()
    counts: dict[int, int] = dataclasses.field(default_factory=dict)


def test_struct_snapshots_are_json_objects_the_store_accepts() -> None:
    # The store takes only JSON that reads back equal: tuples and int keys do not.
    to_snapshot = struct_snapshots(TaggedState)["to_snapshot"]

    snapshot = to_snapshot(TaggedState(("a", "b"), {1: 2}))

    assert msgspec.json.decode(msgspec.json.encode(snapshot)) == snapshot


@pytest.mark.parametrize("category", ["", "lamp-room", "$lamp"])
def test_a_model_category_is_a_valid_name_without_a_dash(category: str) -> None:
    with pytest.raises(ValueError, match="category"):
        Model(category=category, initial_state=LampState, evolve=evolve)


@pytest.mark.parametrize("every", [0, -3, True, 2.5])
def test_snapshot_every_is_a_positive_int(every: Any) -> None:
    with pytest.raises(ValueError, match="snapshot_every must be an int >= 1"):
        Model(category="lamp", initial_state=LampState, evolve=evolve, snapshot_every=every)


def test_snapshots_need_both_conversions() -> None:
    with pytest.raises(ValueError, match="lamp: snapshots need to_snapshot and from_snapshot"):
        Model(category="lamp", initial_state=LampState, evolve=evolve, snapshot_every=2)


class Inventory(Aggregate):
    """A class-style aggregate whose state holds a tuple (JSON has only lists)."""

    category: ClassVar[str] = "inventory"
    snapshot_every: ClassVar[int | None] = 1

    skus: tuple[str, ...]

    def __init__(self) -> None:
        self.skus = ()

    @applies(Renamed)
    def _added(self, event: Renamed) -> None:
        self.skus = (*self.skus, event.name)


def test_class_snapshots_are_json_objects_the_store_accepts() -> None:
    to_snapshot = Inventory.model().to_snapshot
    assert to_snapshot is not None

    snapshot = to_snapshot(Inventory.model().replay([Renamed("pen"), Renamed("ink")]))

    assert msgspec.json.decode(msgspec.json.encode(snapshot)) == snapshot


def test_a_subclass_overriding_a_handler_by_name_uses_its_override() -> None:
    """Overriding an @applies method keeps the registration: the subclass's body runs."""

    @dataclasses.dataclass(frozen=True)
    class Counted:
        by: int

    class Counter(Aggregate):
        category = "counter"

        def __init__(self) -> None:
            self.total = 0

        @applies(Counted)
        def _counted(self, event: Counted) -> None:
            self.total += event.by

    class DoubleCounter(Counter):
        def _counted(self, event: Counted) -> None:
            self.total += 2 * event.by

    counter = DoubleCounter()
    counter.record(Counted(3))
    assert counter.total == 6
    plain = Counter()
    plain.record(Counted(3))
    assert plain.total == 3
