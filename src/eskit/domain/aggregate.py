"""The aggregate class style: command methods record events, ``@applies`` handlers evolve.

Sugar over ``Model``: ``Invoice.model()`` is the engine's view of the class. Handlers are
registered explicitly with a decorator and collected once per class in
``__init_subclass__`` — no metaclass, nothing synthesised.

    class Invoice(Aggregate):
        category = "invoice"
        status: str
        total: int

        def __init__(self) -> None:        # the initial state
            self.status, self.total = "new", 0

        def add_line(self, amount: int) -> None:   # a command method: check, then record
            if self.status != "draft":
                raise InvoiceClosed(...)
            self.record(LineAdded(amount))

        @applies(LineAdded)
        def _line_added(self, event: LineAdded) -> None:   # never raises, no IO
            self.total += event.amount
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import msgspec

from eskit.domain.events import to_json_object
from eskit.domain.model import Model
from eskit.store.model import JSONObject

F = TypeVar("F", bound=Callable[..., None])

_APPLIES = "__eskit_applies__"


def applies(*event_types: type[Any]) -> Callable[[F], F]:
    """Mark a method as the handler that evolves the aggregate for these event types."""
    if not event_types:
        raise TypeError("@applies needs at least one event class")

    def mark(method: F) -> F:
        setattr(method, _APPLIES, event_types)
        return method

    return mark


class Aggregate:
    """Base class of the aggregate style. Subclasses set ``category`` and define
    ``__init__(self)`` (no arguments) as the initial state.

    ``snapshot_every`` turns snapshots on; the snapshot holds the attributes annotated on
    the class (e.g. ``total: int``), converted by msgspec.
    """

    category: ClassVar[str]
    snapshot_every: ClassVar[int | None] = None
    snapshot_version: ClassVar[int] = 1
    _handlers: ClassVar[dict[type[Any], Callable[[Any, Any], None]]] = {}
    _model: ClassVar[Model[Any] | None] = None
    _pending: list[Any] | None = None
    """The events recorded since ``take_pending``, made by the first ``record`` (no
    ``__new__`` to make it: an aggregate is built for every command)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # An inherited handler overridden by name (without repeating @applies) is replaced.
        handlers = {
            event_type: vars(cls).get(handler.__name__, handler)
            for event_type, handler in cls._handlers.items()
        }
        for method in vars(cls).values():
            for event_type in getattr(method, _APPLIES, ()):
                handlers[event_type] = method
        cls._handlers = handlers
        cls._model = None

    def record(self, event: object) -> None:
        """Apply a new event to this aggregate and keep it until the repository saves it."""
        handler = self._handlers.get(type(event))  # as _apply's, a call less for every event
        if handler is None:
            self._apply(event)  # raises the error that names both classes
        else:
            handler(self, event)
        if self._pending is None:
            self._pending = [event]
        else:
            self._pending.append(event)

    def take_pending(self) -> list[Any]:
        """The events recorded since the last call, oldest first (the repository saves them)."""
        pending, self._pending = self._pending, None
        return [] if pending is None else pending

    def _apply(self, event: object) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(
                f"{type(self).__name__} has no @applies handler for {type(event).__name__}"
            )
        handler(self, event)

    @classmethod
    def model(cls) -> Model[Self]:
        """The engine's view of this class (built once)."""
        if cls._model is None:
            cls._model = _model_of(cls)
        model: Model[Self] = cls._model
        return model


def decided_events(state: object, decision: Any) -> list[Any]:
    """The events a handler decided: an Aggregate's recorded events, then any it returned."""
    if isinstance(state, Aggregate):
        pending = state.take_pending()  # the caller's now: no copy
        return pending if decision is None else [*pending, *decision]
    return [] if decision is None else list(decision)


def _model_of(cls: type[Aggregate]) -> Model[Any]:
    if not isinstance(getattr(cls, "category", None), str):
        raise TypeError(f"{cls.__name__} must set the class attribute `category`")
    snapshot: dict[str, Any] = {}
    if cls.snapshot_every is not None:
        snapshot = _annotated_snapshots(cls)
    handlers = cls._handlers

    def evolve(state: Aggregate, event: object) -> Aggregate:
        try:
            handler = handlers[type(event)]
        except KeyError:
            state._apply(event)  # raises the error that names both classes
        handler(state, event)
        return state

    return Model(
        category=cls.category,
        initial_state=cls,
        evolve=evolve,
        snapshot_every=cls.snapshot_every,
        snapshot_version=cls.snapshot_version,
        **snapshot,
    )


def _annotated_snapshots(cls: type[Aggregate]) -> dict[str, Any]:
    """Snapshot the attributes annotated on the class (not ClassVars, not private)."""
    hints = typing.get_type_hints(cls)
    fields = {
        name: hint
        for name, hint in hints.items()
        if not name.startswith("_")
        and typing.get_origin(hint) is not ClassVar
        and hint is not ClassVar
    }
    if not fields:
        raise TypeError(f"{cls.__name__} enables snapshots but annotates no state attributes")

    def to_snapshot(state: Aggregate) -> JSONObject:
        return to_json_object({name: getattr(state, name) for name in fields})

    def from_snapshot(data: JSONObject) -> Aggregate:
        state = cls.__new__(cls)
        for name, hint in fields.items():
            setattr(state, name, msgspec.convert(data[name], hint, str_keys=True))
        return state

    return {"to_snapshot": to_snapshot, "from_snapshot": from_snapshot}
