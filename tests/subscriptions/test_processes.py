"""Consumers in processes of their own: SIGKILL loses nothing, many share the work."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eskit
import eskit.sync
from eskit.subscriptions import Settings, Source
from tests import postgres

pytestmark = pytest.mark.anyio
CHILD = Path(__file__).with_name("consumer_child.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return postgres.store_url()


def _child(*args: str, stdout: int | None = None, stderr: Any = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
        cwd=ROOT,
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_killed_consumer_events_go_to_another_after_message_timeout(
    url: str, children: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    with eskit.sync.open_store(url) as store:
        store.append("invoice-1", [eskit.NewEvent("Due", {"n": n}) for n in range(5)])
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.category("invoice"), settings=Settings(message_timeout=1.5))
        holder = _child("hold", url, "mail", "doomed", "3", stdout=subprocess.PIPE)
        children.append(holder)
        assert holder.stdout is not None
        assert holder.stdout.readline().split() == ["1", "2", "3"]
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        other = groups.consumer("mail", "survivor", poll=0.05)
        free = other.fetch()
        assert [d.event.position for d in free] == [4, 5]
        other.ack(free)
        taken: list[int] = []
        deadline = killed_at + 10
        while len(taken) < 3 and time.monotonic() < deadline:
            batch = other.fetch()
            taken += [d.event.position for d in batch]
            other.ack(batch)
            time.sleep(0.05)
        assert time.monotonic() - killed_at >= 1.0  # not before the timeout
        assert sorted(taken) == [1, 2, 3]


@pytest.mark.slow
def test_four_consumer_processes_handle_each_event_exactly_once(
    url: str, children: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    total = 10_000
    with eskit.sync.open_store(url) as store:
        for start in range(0, total, 500):
            store.append_many(
                [
                    eskit.Append(f"invoice-{n}", [eskit.NewEvent("Due", {"n": n})])
                    for n in range(start, start + 500)
                ]
            )
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.all(), settings=Settings(message_timeout=60, max_in_flight=50))
        outs = [tmp_path / f"c{n}.log" for n in range(4)]
        errors = [tmp_path / f"c{n}.err" for n in range(4)]
        for n, (out, err) in enumerate(zip(outs, errors, strict=True)):
            with err.open("w") as stderr:
                children.append(
                    _child("run", url, "mail", f"c{n}", str(out), str(total), stderr=stderr)
                )
        for process, err in zip(children, errors, strict=True):
            assert process.wait(timeout=180) == 0, err.read_text()
        handled = [line for out in outs for line in out.read_text().split()]
        counts = collections.Counter(handled)
        assert len(counts) == total
        assert max(counts.values()) == 1
        group = groups.get("mail")
        assert (group.checkpoint, group.in_flight, group.waiting, group.parked) == (total, 0, 0, 0)
