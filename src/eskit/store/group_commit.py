"""Leader/follower group commit: writes from any thread, or any event loop, share transactions.

A blocking caller that finds nobody committing commits its own write in its own thread: no
hand-off. Callers that arrive while a commit runs queue up; when it ends, the leader answers
its group and hands the lead to the first one waiting, which commits everything queued by
then in one transaction (one fsync for all). An event loop's caller never blocks its loop:
its write is queued with a future, and if nobody leads, a committer thread (started on
first need) takes the lead; the answer comes back in one ``call_soon_threadsafe`` per loop
and group. Every caller is answered only after its group's COMMIT returned.

The backend gives one function, ``commit(batch)``, that runs a batch of requests in one
transaction and returns each request's outcome (a request that fails its checks fails
alone); only one thread runs it at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from eskit.errors import StoreClosed

R = TypeVar("R")
Outcome = tuple[Any, BaseException | None]
"""A request's value, or the error its caller gets."""
Commit = Callable[[Sequence[R]], tuple[list[Outcome], bool]]
"""Runs a batch in one transaction: an outcome per request, in order, and whether anything
was committed (listeners are told only then). Must not raise for one request's failure."""

Listener = tuple[asyncio.AbstractEventLoop | None, Callable[[], None]]
"""Told after each group that wrote: on its loop, or (None) in the committing thread."""

_LEAD: Final = object()
_STOP: Final = object()


class _Ticket(Generic[R]):
    """A request waiting for its group's COMMIT, and how its caller is told."""

    __slots__ = ("error", "future", "lead", "loop", "request", "value", "wake")

    def __init__(
        self,
        request: R,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.request = request
        self.loop, self.future = loop, future
        self.value: Any = None
        self.error: BaseException | None = None
        self.lead = False  # a blocking follower told to commit the next group
        self.wake: threading.Lock | None = None  # held while a blocking follower waits


class GroupCommit(Generic[R]):
    """Commits requests in groups, led by whichever caller's thread is free to (see module).

    ``idle`` (optional) runs in the committer thread, holding the lead, after ``idle_after``
    seconds without a write: maintenance that needs the write connection to itself (e.g. a
    WAL checkpoint).
    """

    def __init__(
        self,
        commit: Commit[R],
        *,
        name: str,
        max_batch: int = 256,
        idle: Callable[[], None] | None = None,
        idle_after: float = 1.0,
    ) -> None:
        self._commit = commit
        self._name = name
        self._max_batch = max_batch
        self._idle = idle
        self._idle_after = idle_after
        self._lock = threading.Lock()
        self._led = threading.Condition(self._lock)  # notified whenever the lead is released
        self._awaiting_lead = 0  # threads in _led.wait(): without any, nobody is notified
        self._pending: collections.deque[_Ticket[R]] = collections.deque()
        self._leading = False
        self._closed = False
        self._listeners: tuple[
            tuple[asyncio.AbstractEventLoop | None, Callable[[], None]], ...
        ] = ()
        self._signals: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._committer: threading.Thread | None = None
        if idle is not None:
            self._start_committer()

    # -- listeners ----------------------------------------------------------------------

    def listen(
        self, listener: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Call ``listener`` after every group that committed something: on ``loop`` (with
        that loop's answers, one wake-up) or, without one, in the committing thread."""
        with self._lock:  # replaced, never changed in place: committers read it unlocked
            self._listeners = (*self._listeners, (loop, listener))

    def unlisten(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners = tuple((lp, fn) for lp, fn in self._listeners if fn is not listener)

    # -- submitting ---------------------------------------------------------------------

    def run(self, request: R) -> Any:
        """Commit ``request`` (with whatever else is waiting) and return its value or raise
        its error, blocking this thread until its group committed."""
        with self._lock:
            self._check_open()
            if not self._leading:  # nobody commits: commit it here and now, alone
                self._leading = True
                ticket = None
            else:
                ticket = _Ticket(request)
                ticket.wake = threading.Lock()
                ticket.wake.acquire()
                self._pending.append(ticket)
        if ticket is None:
            return self._commit_alone(request)
        wake = ticket.wake
        assert wake is not None
        wake.acquire()  # released when answered, or told to lead
        if ticket.lead:
            self._lead(ticket)
        if ticket.error is not None:
            raise ticket.error
        return ticket.value

    def _commit_alone(self, request: R) -> Any:
        """The uncontended path: no ticket, no queue; then hand the lead on."""
        try:
            ((value, error),), wrote = self._commit([request])
        except BaseException as broke:
            value, error, wrote = None, broke, False
        finally:
            self._hand_over(committer=False)
        if wrote:
            self._tell(self._listeners, {})
        if error is not None:
            raise error
        return value

    def submit(
        self, request: R, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        """Queue ``request`` for an event loop's caller: ``future`` gets its outcome on
        ``loop`` after its group committed. Never blocks on a commit."""
        ticket: _Ticket[R] = _Ticket(request, loop, future)
        with self._lock:
            self._check_open()
            self._pending.append(ticket)
            if self._leading:
                return
            self._leading = True
        self._start_committer()
        self._signals.put(_LEAD)

    def call(self, request: R) -> asyncio.Future[Any]:
        """``submit`` from the running loop: await the future for the outcome (a future,
        not a coroutine: one frame less per call)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.submit(request, loop, future)
        return future

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closing: nothing was written")

    # -- leading ------------------------------------------------------------------------

    def _lead(self, mine: _Ticket[R] | None = None) -> None:
        """Commit the group holding ``mine`` (a blocking caller), or every group until
        nothing waits (the committer thread), then hand the lead on."""
        committer = mine is None
        while True:
            try:
                self._commit_round(once=not committer)
            except BaseException:  # e.g. KeyboardInterrupt in a blocking leader
                self._hand_over(committer=False)
                raise
            if not self._hand_over(committer):
                return

    def _commit_round(self, once: bool) -> None:
        while True:
            with self._lock:
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
            if batch:
                self._commit_batch(batch)
            if once:
                return
            with self._lock:
                if not self._pending:
                    return

    def _hand_over(self, committer: bool) -> bool:
        """Give the lead to the first caller waiting (a blocking one leads in its own
        thread; a loop's, through the committer thread), or release it. True: the caller
        is the committer thread and leads again."""
        with self._lock:
            if not self._pending:
                self._leading = False
                if self._awaiting_lead:
                    self._led.notify_all()
                return False
            first = self._pending[0]
            if first.wake is not None:
                first.lead = True
                first.wake.release()
                return False
        if committer:
            return True
        self._start_committer()
        self._signals.put(_LEAD)
        return False

    def _commit_batch(self, batch: list[_Ticket[R]]) -> None:
        try:
            outcomes, wrote = self._commit([t.request for t in batch])
        except BaseException as error:  # the commit function broke: everyone gets to know
            outcomes, wrote = [(None, error)] * len(batch), False
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
        for ticket, outcome in zip(batch, outcomes, strict=True):
            if ticket.loop is None or ticket.future is None:
                ticket.value, ticket.error = outcome
                if ticket.wake is not None and not ticket.lead:
                    ticket.wake.release()
            else:
                by_loop.setdefault(ticket.loop, []).append((ticket.future, outcome))
        self._tell(self._listeners if wrote else (), by_loop)

    @staticmethod
    def _tell(
        listeners: tuple[Listener, ...],
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]],
    ) -> None:
        """Answer the loops' callers and run the listeners: one wake-up per loop."""
        for loop, listener in listeners:
            if loop is None:
                listener()
            else:
                by_loop.setdefault(loop, [])
        for loop, items in by_loop.items():
            follow = [fn for lp, fn in listeners if lp is loop]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, items, follow)

    # -- the committer thread -----------------------------------------------------------

    def _start_committer(self) -> None:
        with self._lock:
            if self._committer is not None:
                return
            self._committer = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._committer.start()

    def _serve(self) -> None:
        while True:
            try:
                signal = self._signals.get(timeout=self._idle_after if self._idle else None)
            except queue.Empty:
                self._maintain()
                continue
            if signal is _STOP:
                return
            self._lead()

    def _maintain(self) -> None:
        """Run ``idle`` holding the lead, if nobody is writing."""
        with self._lock:
            if self._leading or self._idle is None:
                return
            self._leading = True
        try:
            self._idle()
        finally:
            if self._hand_over(committer=True):
                self._lead()

    def exclusive(self, run: Callable[[], Any]) -> Any:
        """Run ``run`` in this thread holding the lead (no commit runs meanwhile), once the
        writes queued before it are committed: e.g. the last checkpoint before closing."""
        with self._lock:
            while self._leading:
                self._wait_for_lead()
            self._leading = True
        try:
            return run()
        finally:
            self._hand_over(committer=False)

    def _wait_for_lead(self) -> None:
        """Wait (holding ``_lock``) until the lead is next released."""
        self._awaiting_lead += 1
        try:
            self._led.wait()
        finally:
            self._awaiting_lead -= 1

    def close(self, last: Callable[[], None] | None = None) -> None:
        """Refuse new requests, commit those queued, run ``last`` holding the lead, and
        stop the committer thread. Closing twice is harmless."""
        with self._lock:
            self._closed = True
            while self._leading or self._pending:
                self._wait_for_lead()
            committer, self._committer = self._committer, None
        if last is not None:
            self.exclusive(last)
        if committer is not None:
            self._signals.put(_STOP)
            committer.join()


def _settle(
    items: list[tuple[asyncio.Future[Any], Outcome]], listeners: list[Callable[[], None]]
) -> None:
    for future, (value, error) in items:
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
    for listener in listeners:
        listener()
