"""Leader/follower group commit: writes from any thread, or any event loop, share transactions.

A blocking caller that finds nobody committing commits its own write in its own thread: no
hand-off. Callers that arrive while a commit runs queue up; when it ends, the leader answers
its group and hands the lead to the first one waiting, which commits everything queued by
then in one transaction (one fsync for all). An event loop's caller is not kept waiting
for a commit: its write is queued with a future, and if nobody leads, a committer thread
(started on first need) takes the lead; the answer comes back in one
``call_soon_threadsafe`` per loop and group, which also wakes the callers' tasks
(``_Answer``: no ``call_soon`` per caller). One exception, asked for by the caller
(``call``'s ``here``): a write that finds nobody committing, nothing queued and its loop
with nothing else to run is committed on the loop, in the call, as a blocking caller's
would be; a thread would add a round trip while the loop waits for it anyway. Every caller
is answered only after its group's COMMIT returned.

The backend gives one function, ``commit(batch)``, that runs a batch of requests in one
transaction and returns each request's outcome (a request that fails its checks fails
alone); only one thread runs it at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
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

_CLOSING: Final = "the store is closing: nothing was written"
LOOP_COMMIT_LIMIT: float = 0.001
"""Commits made on an event loop (``call``'s ``here``) that take longer than this on average
(seconds, over the last ~16: a slow disk's fsync, not one hiccup) keep the loop from
committing for ``LOOP_COMMIT_PAUSE`` seconds: its appends go to the committer thread.
(Not final: ``benchmarks.instructions`` lifts it, as valgrind makes every commit slow.)"""
LOOP_COMMIT_PAUSE: Final = 1.0
_LEAD: Final = object()
_STOP: Final = object()


class _Ticket:
    """A blocking caller waiting for its group's COMMIT, and its answer."""

    __slots__ = ("error", "lead", "value", "wake")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.lead = False  # a blocking follower told to commit the next group
        self.wake: threading.Lock | None = None  # held while a blocking follower waits


Waker = tuple[Callable[..., object], contextvars.Context]
"""A done-callback and the context it runs in."""


class _Answer(asyncio.Future[Any]):
    """The future a loop's caller awaits, whose awaiting task ``_settle`` wakes itself.

    A plain future wakes the task awaiting it through ``call_soon``: a handle, and for a
    lone caller one more turn of the loop, per append. ``_settle`` already runs on the loop
    once per group, so this future keeps its first done-callback (the awaiting task's) for
    ``_settle`` to run there and then. Any other callback, one added once done and a
    cancellation take the plain future's way.
    """

    __slots__ = ("waker",)
    waker: Waker | None  # set to None where it is made (``call``): no __init__ to run

    def add_done_callback(
        self, fn: Callable[..., object], *, context: contextvars.Context | None = None
    ) -> None:
        if self.waker is None and not self.done():
            self.waker = (fn, contextvars.copy_context() if context is None else context)
        else:
            super().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Callable[..., object]) -> int:
        removed = super().remove_done_callback(fn)
        if self.waker is not None and self.waker[0] == fn:
            self.waker = None
            removed += 1
        return removed

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        if self.waker is not None:  # woken as a plain future's callback would be
            (fn, context), self.waker = self.waker, None
            self.get_loop().call_soon(fn, self, context=context)
        return True


_Queued = tuple[R, _Ticket, None] | tuple[R, _Answer, asyncio.AbstractEventLoop]
"""A request waiting for its group and who waits for it: a blocking caller's ticket, or an
event loop's future and that loop (a tuple: no object of eskit's own per call from a loop;
the loop in it, so that a group of one loop's callers is answered without a look at each)."""
_request: Final = itemgetter(0)
_waiter: Final = itemgetter(1)
_loop: Final = itemgetter(2)

Answers = tuple[list[_Answer], list[Outcome]]
"""A loop's callers of one group, and their outcomes in the same order."""
_Told = tuple[
    tuple[Callable[[], None], ...],
    dict[asyncio.AbstractEventLoop, tuple[Callable[[], None], ...]],
]
"""The listeners of the committing thread, and those of each loop."""


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
        self._pending: collections.deque[_Queued[R]] = collections.deque()
        self._leading = False
        self._closed = False
        self._listeners: tuple[
            tuple[asyncio.AbstractEventLoop | None, Callable[[], None]], ...
        ] = ()
        self._told: _Told = ((), {})
        """The listeners as ``_tell`` calls them: those of the committing thread, and
        each loop's (made when they change, not at every commit)."""
        self._signals: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._committer: threading.Thread | None = None
        self._loop_commits_from = 0.0
        """``time.monotonic()`` before which no commit is made on a loop (0.0: no pause)."""
        self._loop_commit_time = 0.0
        """The recent commits' time on a loop (seconds, a moving average)."""
        if idle is not None:
            self._start_committer()

    # -- listeners ----------------------------------------------------------------------

    def listen(
        self, listener: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Call ``listener`` after every group that committed something: on ``loop`` (with
        that loop's answers, one wake-up) or, without one, in the committing thread."""
        with self._lock:  # replaced, never changed in place: committers read it unlocked
            self._set_listeners((*self._listeners, (loop, listener)))

    def unlisten(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._set_listeners(tuple((lp, fn) for lp, fn in self._listeners if fn is not listener))

    def _set_listeners(self, listeners: tuple[Listener, ...]) -> None:
        """Replace the listeners (holding ``_lock``) and ``_told``, made from them: one
        tuple, replaced whole, so that a committer reading it unlocked sees one set."""
        self._listeners = listeners
        on_loops: dict[asyncio.AbstractEventLoop, tuple[Callable[[], None], ...]] = {}
        for loop, listener in listeners:
            if loop is not None:
                on_loops[loop] = (*on_loops.get(loop, ()), listener)
        in_thread = tuple(fn for loop, fn in listeners if loop is None)
        self._told = (in_thread, on_loops)

    # -- submitting ---------------------------------------------------------------------

    def run(self, request: R) -> Any:
        """Commit ``request`` (with whatever else is waiting) and return its value or raise
        its error, blocking this thread until its group committed. A caller that finds
        nobody committing commits it here and now, alone (no ticket, no queue; inline, not
        in a function of its own: a call less on every append), then hands the lead on."""
        self._lock.acquire()  # not `with`: ~1,000 instructions less, on every append
        try:
            if self._closed:  # not _check_open(): a call less on every append
                raise StoreClosed(_CLOSING)
            if not self._leading:  # nobody commits: commit it alone, below
                self._leading = True
                ticket = None
            else:
                ticket = _Ticket()
                ticket.wake = threading.Lock()
                ticket.wake.acquire()
                self._pending.append((request, ticket, None))
        finally:
            self._lock.release()
        if ticket is None:
            try:
                ((value, error),), wrote = self._commit([request])
            except BaseException as broke:
                value, error, wrote = None, broke, False
            finally:
                self._hand_over(committer=False)
            if wrote:
                in_thread, on_loops = self._told
                if on_loops:
                    self._tell(True, {})
                else:  # no loop listens (as a rule: only the engine): no _tell to call
                    for listener in in_thread:
                        listener()
        else:
            wake = ticket.wake
            assert wake is not None
            wake.acquire()  # released when answered, or told to lead
            if ticket.lead:
                self._lead(ticket)
            value, error = ticket.value, ticket.error
        if error is not None:
            raise error
        return value

    def call(self, request: R, here: bool = False) -> asyncio.Future[Any]:
        """Queue ``request`` from the running loop: the future gets its outcome on this
        loop after its group committed. (A future, not a coroutine, and the queueing
        inline: this runs once per append on the loop.)

        ``here``: the request may be committed on the loop itself, in this call, when
        nobody commits, nothing waits and the loop has nothing else ready to run
        (``_loop_is_idle``), and commits on a loop were not slow lately (``LOOP_COMMIT_LIMIT``):
        a thread would only add a round trip (~90 µs) while the loop waits for it. The
        future is then answered in the loop's next turn, which polls for IO first.
        Otherwise, or on a loop whose queue of ready callbacks cannot be seen, it never
        blocks on a commit."""
        loop = asyncio.get_running_loop()
        future = _Answer(loop=loop)
        future.waker = None
        self._lock.acquire()  # not `with`, as in ``run``
        try:
            if self._closed:  # not _check_open(): a call less on every append
                raise StoreClosed(_CLOSING)
            if (
                here
                and not self._leading
                and not self._pending
                and _loop_is_idle(loop)
                and (not self._loop_commits_from or self._loop_commits_resumed())
            ):
                self._leading = True  # committed below, on this loop
            else:
                self._pending.append((request, future, loop))
                if self._leading:
                    return future
                self._leading = True
                here = False
        finally:
            self._lock.release()
        if here:
            self._commit_here(request, future, loop)
            return future
        self._start_committer()
        self._signals.put(_LEAD)
        return future

    def _commit_here(self, request: R, future: _Answer, loop: asyncio.AbstractEventLoop) -> None:
        """Commit ``request`` alone on ``loop`` (``call``, holding the lead), hand the lead
        on, and answer its caller in the loop's next turn, with the listeners. (The commit
        function raises only if it broke, e.g. an interrupt: that goes up to the caller, as
        in ``run``.)"""
        start = time.perf_counter()
        try:
            (outcome,), wrote = self._commit([request])
        finally:
            self._hand_over(committer=False)
        took = self._loop_commit_time
        took += (time.perf_counter() - start - took) / 16
        if took > LOOP_COMMIT_LIMIT:  # slow lately: the committer thread's for a while
            self._loop_commits_from, took = time.monotonic() + LOOP_COMMIT_PAUSE, 0.0
        self._loop_commit_time = took
        self._tell(wrote, {loop: ([future], [outcome])}, loop)

    def _loop_commits_resumed(self) -> bool:
        """Whether the pause after a slow commit on a loop is over (then forgotten)."""
        if time.monotonic() < self._loop_commits_from:
            return False
        self._loop_commits_from = 0.0
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(_CLOSING)

    # -- leading ------------------------------------------------------------------------

    def _lead(self, mine: _Ticket | None = None) -> None:
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
                batch = self._take()
            if batch:
                self._commit_batch(batch)
            if once:
                return
            with self._lock:
                if not self._pending:
                    return

    def _take(self) -> list[_Queued[R]]:
        """The next group (holding ``_lock``): all that waits, up to ``max_batch``."""
        pending = self._pending
        if len(pending) <= self._max_batch:  # the usual case: no call per request
            batch = list(pending)
            pending.clear()
            return batch
        return [pending.popleft() for _ in range(self._max_batch)]

    def _hand_over(self, committer: bool) -> bool:
        """Give the lead to the first caller waiting (a blocking one leads in its own
        thread; a loop's, through the committer thread), or release it. True: the caller
        is the committer thread and leads again."""
        self._lock.acquire()  # not `with`: ~1,000 instructions less, once per group
        try:
            if not self._pending:
                self._leading = False
                if self._awaiting_lead:
                    self._led.notify_all()
                return False
            first = self._pending[0][1]
            if isinstance(first, _Ticket) and first.wake is not None:
                first.lead = True
                first.wake.release()
                return False
        finally:
            self._lock.release()
        if committer:
            return True
        self._start_committer()
        self._signals.put(_LEAD)
        return False

    def _commit_batch(self, batch: list[_Queued[R]]) -> None:
        # map with itemgetter: the batch's requests and loops taken in C, no loop of ours
        try:
            outcomes, wrote = self._commit(list(map(_request, batch)))
        except BaseException as error:  # the commit function broke: everyone gets to know
            outcomes, wrote = [(None, error)] * len(batch), False
        loops = set(map(_loop, batch))
        if len(loops) == 1 and None not in loops:  # one loop's callers (as a rule): as they are
            by_loop = {loops.pop(): (list(map(_waiter, batch)), outcomes)}
        else:
            by_loop = _answer(batch, outcomes)
        self._tell(wrote, by_loop)

    def _tell(
        self,
        wrote: bool,
        by_loop: dict[asyncio.AbstractEventLoop, Answers],
        running: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Answer the loops' callers and, if the group wrote, run the listeners: one
        wake-up per loop (the ``running`` one, this thread's, is not woken: its callback
        is just queued)."""
        on_loops: dict[asyncio.AbstractEventLoop, tuple[Callable[[], None], ...]] = {}
        if wrote:
            in_thread, on_loops = self._told
            for listener in in_thread:
                listener()
            for loop in on_loops:
                if loop not in by_loop:
                    by_loop[loop] = ([], [])
        for loop, (futures, outcomes) in by_loop.items():
            follow = on_loops.get(loop, ())
            if loop is running:
                loop.call_soon(_settle, futures, outcomes, follow)
                continue
            try:  # noqa: SIM105 - not contextlib.suppress: three calls less per commit
                loop.call_soon_threadsafe(_settle, futures, outcomes, follow)
            except RuntimeError:  # a closed loop: nobody waits any more
                pass

    # -- the committer thread -----------------------------------------------------------

    def _start_committer(self) -> None:
        if self._committer is not None:  # started once; checked again under the lock
            return
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


def _loop_is_idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has nothing ready to run besides the running callback, or only its
    own wake-up (draining its self-pipe after an answer from another thread): asyncio's
    selector loops keep ready callbacks in ``_ready`` (private, the same since Python 3.4).
    Any other loop (uvloop...) is never taken for idle. Callers that ``_wake`` is about to
    wake count as ready."""
    if _WAKING.others:  # callers of the last group are still to run
        return False
    ready = getattr(loop, "_ready", None)
    if not ready:
        return ready is not None
    wake_up = getattr(loop, "_read_from_self", None)
    return len(ready) == 1 and wake_up is not None and ready[0]._callback == wake_up


def _answer(
    batch: list[_Queued[R]], outcomes: list[Outcome]
) -> dict[asyncio.AbstractEventLoop, Answers]:
    """Answer the blocking callers of a group; its loops' callers, gathered by loop, are
    for ``_settle`` to answer."""
    by_loop: dict[asyncio.AbstractEventLoop, Answers] = {}
    for (_, waiter, _), outcome in zip(batch, outcomes, strict=True):
        if isinstance(waiter, _Ticket):
            waiter.value, waiter.error = outcome
            if waiter.wake is not None and not waiter.lead:
                waiter.wake.release()
        else:
            futures, answers = by_loop.setdefault(waiter.get_loop(), ([], []))
            futures.append(waiter)
            answers.append(outcome)
    return by_loop


def _settle(
    futures: list[_Answer], outcomes: list[Outcome], listeners: Sequence[Callable[[], None]]
) -> None:
    """On a loop: answer its callers of one group, run its listeners, then wake the
    callers' tasks in this same callback (``_Answer``). A future cancelled meanwhile is
    left as it is (its task was woken by ``cancel``)."""
    wakers: list[tuple[Waker, _Answer]] = []
    for future, (value, error) in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
        waker = future.waker
        if waker is not None:
            future.waker = None
            wakers.append((waker, future))
    try:
        for listener in listeners:
            listener()
    finally:
        _wake(wakers)


class _Waking(threading.local):
    """Per thread: how many callers ``_wake`` has still to wake on this thread's loop. Not
    in the loop's ready queue, they are work all the same: while any is left, the loop is
    not idle (``_loop_is_idle``), so that a group's callers appending again group again."""

    others = 0


_WAKING: Final = _Waking()


def _wake(wakers: list[tuple[Waker, _Answer]]) -> None:
    """Run each waker; if one raises, the rest are left to the loop, as they would be."""
    if len(wakers) == 1:
        (((fn, context), future),) = wakers
        context.run(fn, future)
        return
    waking = _WAKING
    try:
        for i, ((fn, context), future) in enumerate(wakers):
            waking.others = len(wakers) - i - 1
            try:
                context.run(fn, future)
            except BaseException:
                for (later, later_context), later_future in wakers[i + 1 :]:
                    future.get_loop().call_soon(later, later_future, context=later_context)
                raise
    finally:
        waking.others = 0
