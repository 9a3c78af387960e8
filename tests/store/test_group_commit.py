"""Leader/follower group commit (``eskit.store.group_commit``), with a fake transaction."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from eskit.errors import StoreClosed
from eskit.store import group_commit
from eskit.store.group_commit import GroupCommit, Outcome


class Log:
    """A fake database: records every group, refuses the request "bad", and fails if two
    commits ever overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.groups: list[list[str]] = []
        self.threads: list[int] = []
        self.committed: set[str] = set()
        self._busy = threading.Lock()

    def commit(self, batch: Sequence[str]) -> tuple[list[Outcome], bool]:
        assert self._busy.acquire(blocking=False), "two commits at once"
        try:
            time.sleep(self.delay)
            self.groups.append(list(batch))
            self.threads.append(threading.get_ident())
            outcomes: list[Outcome] = []
            for request in batch:
                if request == "bad":
                    outcomes.append((None, ValueError("refused")))
                else:
                    self.committed.add(request)
                    outcomes.append((request.upper(), None))
            return outcomes, True
        finally:
            self._busy.release()


def test_an_uncontended_caller_commits_in_its_own_thread() -> None:
    log = Log()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    assert group.run("a") == "A"
    assert log.threads == [threading.get_ident()]
    group.close()


def test_a_refused_request_fails_alone() -> None:
    log = Log()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    with pytest.raises(ValueError, match="refused"):
        group.run("bad")
    assert group.run("b") == "B"
    group.close()


def test_concurrent_blocking_callers_share_groups_and_are_answered_after_commit() -> None:
    log = Log(delay=0.002)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    answers: dict[str, str] = {}
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        for n in range(30):
            request = f"w{worker}-{n}"
            try:
                answers[request] = group.run(request)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)
            assert request in log.committed  # answered only after its group committed

    threads = [threading.Thread(target=write, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(answers) == 16 * 30
    assert all(v == k.upper() for k, v in answers.items())
    assert sum(len(g) for g in log.groups) == 16 * 30
    assert max(len(g) for g in log.groups) > 1  # followers were committed together
    group.close()


def test_a_loop_caller_never_blocks_the_loop_and_wakes_listeners_once_per_group() -> None:
    log = Log(delay=0.001)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    woken: list[int] = []

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        group.listen(lambda: woken.append(threading.get_ident()), loop)
        results = await asyncio.gather(*(group.call(f"r{n}") for n in range(200)))
        return list(results)

    results = asyncio.run(main())
    assert results == [f"R{n}" for n in range(200)]
    assert threading.get_ident() not in log.threads  # the committer thread committed
    assert max(len(g) for g in log.groups) > 1
    assert len(woken) == len(log.groups)
    assert set(woken) == {threading.get_ident()}  # on the loop
    group.close()


def test_blocking_and_loop_callers_mixed() -> None:
    log = Log(delay=0.001)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    blocking: list[str] = []

    def write() -> None:
        for n in range(50):
            blocking.append(group.run(f"t{n}"))

    async def main() -> list[str]:
        return list(await asyncio.gather(*(group.call(f"a{n}") for n in range(100))))

    thread = threading.Thread(target=write)
    thread.start()
    results = asyncio.run(main())
    thread.join()
    assert results == [f"A{n}" for n in range(100)]
    assert blocking == [f"T{n}" for n in range(50)]
    group.close()


def breaking_once() -> Callable[[Sequence[str]], tuple[list[Outcome], bool]]:
    """A commit function that breaks (raises) the first time, then commits everything."""
    calls = 0

    def commit(batch: Sequence[str]) -> tuple[list[Outcome], bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return [(r, None) for r in batch], True

    return commit


def test_a_commit_function_that_breaks_fails_its_group_only() -> None:
    group: GroupCommit[str] = GroupCommit(breaking_once(), name="test")
    with pytest.raises(RuntimeError, match="disk on fire"):
        group.run("a")
    assert group.run("b") == "b"
    group.close()


def test_close_commits_what_is_queued_then_refuses() -> None:
    log = Log(delay=0.01)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    answered: list[str] = []
    refused: list[str] = []

    def write(request: str) -> None:
        try:
            answered.append(group.run(request))
        except StoreClosed:
            refused.append(request)

    threads = [threading.Thread(target=write, args=(f"c{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.005)
    last: list[bool] = []
    group.close(last=lambda: last.append(True))
    assert last == [True]
    for thread in threads:
        thread.join()
    # each caller either committed (and was answered) or was refused: none is left hanging
    assert sorted(a.lower() for a in answered) == sorted(log.committed)
    assert len(answered) + len(refused) == 8
    assert answered
    with pytest.raises(StoreClosed):
        group.run("late")


def test_idle_maintenance_runs_alone_when_nothing_is_written() -> None:
    log = Log()
    ran = threading.Event()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test", idle=ran.set, idle_after=0.02)
    assert ran.wait(2)
    assert group.run("a") == "A"
    group.close()


def test_a_loop_caller_gets_its_own_error_and_the_others_their_values() -> None:
    log = Log(delay=0.001)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> list[object]:
        requests = ["a", "bad", "b"]
        return list(
            await asyncio.gather(*(group.call(r) for r in requests), return_exceptions=True)
        )

    a, bad, b = asyncio.run(main())
    assert (a, b) == ("A", "B")
    assert isinstance(bad, ValueError)
    group.close()


def test_a_cancelled_loop_caller_is_woken_at_once_and_the_rest_are_answered() -> None:
    log = Log(delay=0.05)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> tuple[bool, list[str]]:
        first = asyncio.ensure_future(group.call("first"))  # the committer takes it alone
        await asyncio.sleep(0.01)
        cancelled = asyncio.ensure_future(asyncio.wait_for(group.call("late"), 5))
        others = [asyncio.ensure_future(group.call(f"o{n}")) for n in range(3)]
        await asyncio.sleep(0)
        cancelled.cancel()
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        quick = time.perf_counter() - started < 0.04  # before the commit it waited for
        return quick, [await first, *[await o for o in others]]

    quick, answers = asyncio.run(main())
    assert quick
    assert answers == ["FIRST", "O0", "O1", "O2"]
    group.close()
    assert "late" in log.committed  # it was queued: it commits, nobody waits for it


def test_a_raising_done_callback_leaves_the_other_callers_woken() -> None:
    log = Log(delay=0.02)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    reported: list[BaseException] = []

    def boom(_: object) -> None:
        raise RuntimeError("callback broke")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
        blocker = group.call("first")  # holds the committer while the next ones queue
        await asyncio.sleep(0.005)
        broken = group.call("x")
        broken.add_done_callback(boom)  # its first callback: run by the group's wake-up
        waiting = [asyncio.create_task(answer(f"y{n}")) for n in range(3)]
        await asyncio.sleep(0)  # the tasks wait on their futures: their wake-ups come next
        return [await blocker, await broken, *[await w for w in waiting]]

    async def answer(request: str) -> str:
        value: str = await group.call(request)
        return value

    assert asyncio.run(main()) == ["FIRST", "X", "Y0", "Y1", "Y2"]
    assert [str(e) for e in reported] == ["callback broke"]
    group.close()


def test_groups_hold_at_most_max_batch_requests_in_the_order_queued() -> None:
    log = Log(delay=0.01)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test", max_batch=3)

    async def main() -> list[str]:
        return list(await asyncio.gather(*(group.call(f"m{n}") for n in range(10))))

    assert asyncio.run(main()) == [f"M{n}" for n in range(10)]
    assert max(len(g) for g in log.groups) == 3
    assert [r for g in log.groups for r in g] == [f"m{n}" for n in range(10)]
    group.close()


def test_a_raising_listener_leaves_the_group_answered() -> None:
    log = Log(delay=0.01)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    reported: list[BaseException] = []

    def broken() -> None:
        raise RuntimeError("listener broke")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
        group.listen(broken, loop)
        return list(await asyncio.gather(*(group.call(f"l{n}") for n in range(5))))

    assert asyncio.run(main()) == [f"L{n}" for n in range(5)]
    assert reported
    assert {str(e) for e in reported} == {"listener broke"}
    group.close()


def test_a_caller_woken_first_may_cancel_one_of_its_group() -> None:
    log = Log(delay=0.02)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> tuple[str, bool, str]:
        blocker = group.call("first")  # holds the committer while the next ones queue
        await asyncio.sleep(0.005)
        later: list[asyncio.Task[str]] = []

        async def cancelling() -> str:
            value: str = await group.call("a")
            later[0].cancel()  # its future, of the same group, may be answered or not yet
            return value

        async def answer(request: str) -> str:
            value: str = await group.call(request)
            return value

        first = asyncio.create_task(cancelling())
        later.append(asyncio.create_task(answer("b")))
        last = asyncio.create_task(answer("c"))
        await blocker
        cancelled = False
        try:
            await later[0]
        except asyncio.CancelledError:
            cancelled = True
        return await first, cancelled, await last

    assert asyncio.run(main()) == ("A", True, "C")
    group.close()
    assert {"a", "b", "c"} <= log.committed


def test_a_lone_caller_on_an_idle_loop_commits_there_and_is_answered_in_the_next_turn() -> None:
    """``call(..., here=True)`` with nothing else ready on the loop: no thread, no hand-off,
    and the caller still yields to the loop once per commit (its IO is polled)."""
    log = Log()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> list[str]:
        answers: list[str] = []
        for n in range(20):
            future = group.call(f"r{n}", here=True)
            assert f"r{n}" in log.committed  # committed in the call
            assert not future.done()  # answered in the loop's next turn
            answers.append(await future)
        return answers

    assert asyncio.run(main()) == [f"R{n}" for n in range(20)]
    assert set(log.threads) == {threading.get_ident()}
    assert group._committer is None  # no committer thread was ever needed
    group.close()


def test_a_loop_with_other_work_ready_hands_the_commit_off() -> None:
    log = Log()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> str:
        asyncio.get_running_loop().call_soon(lambda: None)  # something else to run
        answer: str = await group.call("a", here=True)
        return answer

    assert asyncio.run(main()) == "A"
    assert log.threads != [threading.get_ident()]  # the committer thread's
    group.close()


def test_the_callers_of_a_group_appending_again_are_grouped_again_not_committed_on_the_loop() -> (
    None
):
    """50 tasks appending in turn: none of their commits is made on the loop, although the
    loop's ready queue is empty while ``_settle`` wakes them one after another."""
    log = Log(delay=0.001)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def task(t: int) -> None:
        for n in range(10):
            assert await group.call(f"t{t}-{n}", here=True) == f"T{t}-{n}"

    async def main() -> None:
        await asyncio.gather(*(task(t) for t in range(50)))

    asyncio.run(main())
    assert threading.get_ident() not in log.threads
    assert sum(map(len, log.groups)) == 500
    assert len(log.groups) < 100  # grouped
    group.close()


def test_slow_commits_on_the_loop_send_the_next_ones_to_the_committer_thread() -> None:
    """Commits on the loop averaging over ``LOOP_COMMIT_LIMIT`` (a slow disk) stop it from
    committing for ``LOOP_COMMIT_PAUSE``: the loop stalls a few times, not at every append."""
    log = Log(delay=3 * group_commit.LOOP_COMMIT_LIMIT)
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")

    async def main() -> None:
        for n in range(30):
            assert await group.call(f"r{n}", here=True) == f"R{n}"

    asyncio.run(main())
    on_loop = log.threads.count(threading.get_ident())
    assert 1 <= on_loop <= 10, on_loop  # the moving average crossed the limit, then paused
    assert len(log.threads) == 30
    group.close()


def test_a_commit_on_the_loop_that_breaks_raises_to_its_caller_and_frees_the_lead() -> None:
    group: GroupCommit[str] = GroupCommit(breaking_once(), name="test")

    async def main() -> str:
        with pytest.raises(RuntimeError, match="disk on fire"):
            group.call("a", here=True)
        answer: str = await group.call("b", here=True)
        return answer

    assert asyncio.run(main()) == "b"
    group.close()


def test_a_commit_on_the_loop_tells_the_listeners_of_its_loop_there() -> None:
    log = Log()
    group: GroupCommit[str] = GroupCommit(log.commit, name="test")
    told: list[str] = []

    async def main() -> None:
        group.listen(lambda: told.append("loop"), asyncio.get_running_loop())
        group.listen(lambda: told.append("thread"))
        future = group.call("a", here=True)
        assert told == ["thread"]  # at once, in the committing thread (this one)
        await future
        assert told == ["thread", "loop"]  # with the answer, in the loop's next turn

    asyncio.run(main())
    group.close()
