"""Given / when / then specifications for aggregates, in either style, without a store.

    spec = Spec(invoice_decider)                      # or Spec(Invoice) for the class style
    spec.given(InvoiceCreated(...)).when(PayInvoice(...)).then(InvoicePaid(...))
    spec.given(InvoiceCreated(...), InvoiceCancelled()).when(PayInvoice(...)).then_raises(
        InvoiceCancelledError
    )

``when`` takes a command (handled by the Decider's ``decide`` or the ``handle`` given to
``Spec``) or a function of the state (``lambda invoice: invoice.pay(100)``). Failures show
the expected and actual events side by side.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from eskit.domain.aggregate import Aggregate, decided_events
from eskit.domain.model import Decider, Model

S = TypeVar("S")
X = TypeVar("X", bound=BaseException)


class Spec(Generic[S]):
    """The aggregate under test: a Decider, a Model with ``handle``, or an Aggregate class."""

    def __init__(
        self, target: Model[S] | type[Aggregate], handle: Callable[[Any, S], Any] | None = None
    ) -> None:
        model = target.model() if isinstance(target, type) else target
        self.model: Model[S] = model  # type: ignore[assignment]
        if handle is None and isinstance(model, Decider):
            handle = model.decide
        self.handle = handle

    def given(self, *events: object) -> Given[S]:
        """The aggregate's history (may be empty: a new aggregate)."""
        return Given(self, list(events))


class Given(Generic[S]):
    def __init__(self, spec: Spec[S], history: list[object]) -> None:
        self.spec = spec
        self.history = history

    def when(self, action: object) -> When[S]:
        """Run a command, or a function of the state, against the state after the history."""
        spec = self.spec
        state = spec.model.replay(self.history)
        if isinstance(state, Aggregate):
            state.take_pending()
        error: BaseException | None = None
        events: list[Any] = []
        try:
            if inspect.isfunction(action) or inspect.ismethod(action):
                decision = action(state)
            elif spec.handle is not None:
                decision = spec.handle(action, state)
            else:
                raise TypeError("Spec needs `handle=` to run commands (or pass a function)")
            if inspect.isawaitable(decision):
                raise TypeError("specs run synchronously: the handler returned an awaitable")
            events = decided_events(state, decision)
        except (AssertionError, TypeError):
            raise
        except Exception as caught:
            error = caught
        return When(self, events, error, state)


class When(Generic[S]):
    def __init__(
        self, given: Given[S], events: list[Any], error: BaseException | None, state: S
    ) -> None:
        self.given = given
        self.events = events
        self.error = error
        self.state = state

    def then(self, *expected: object) -> list[Any]:
        """Assert that exactly these events were decided, in this order."""
        if self.error is not None:
            raise AssertionError(
                f"expected events, but the command raised {self.error!r}\n"
                f"{table(list(expected), [])}"
            ) from self.error
        if list(expected) != self.events:
            raise AssertionError(
                "the events decided differ from those expected\n"
                + table(list(expected), self.events)
            )
        return self.events

    def then_nothing(self) -> None:
        """Assert that the command decided no events and raised nothing."""
        self.then()

    def then_raises(self, error_type: type[X], match: str | None = None) -> X:
        """Assert that the command raised ``error_type`` (message matching ``match``)."""
        if self.error is None:
            raise AssertionError(
                f"expected {error_type.__name__}, but the command decided:\n"
                + table([], self.events)
            )
        if not isinstance(self.error, error_type):
            raise AssertionError(
                f"expected {error_type.__name__}, got {self.error!r}"
            ) from self.error
        if match is not None and not re.search(match, str(self.error)):
            raise AssertionError(f"{self.error!r} does not match {match!r}") from self.error
        return self.error

    def then_state(self, check: Callable[[S], object]) -> S:
        """Assert something of the state after the command (``check`` returns truthy)."""
        if self.error is not None:
            raise AssertionError(f"the command raised {self.error!r}") from self.error
        state = (
            self.state  # its command methods already applied the events
            if isinstance(self.state, Aggregate)
            else self.given.spec.model.replay(self.events, self.state)
        )
        if not check(state):
            raise AssertionError(f"the state after the command fails the check: {state!r}")
        return state


def table(expected: Sequence[object], actual: Sequence[object], what: str = "events") -> str:
    """Expected and actual events (or rows) line by line, marking where they differ."""
    lines = []
    for i in range(max(len(expected), len(actual))):
        want = repr(expected[i]) if i < len(expected) else "(nothing)"
        got = repr(actual[i]) if i < len(actual) else "(nothing)"
        mark = "  " if want == got else "✗ "
        lines.append(f"{mark}#{i} expected {want}\n{' ' * len(mark)}#{i} actual   {got}")
    return "\n".join(lines) if lines else f"  (no {what} on either side)"
