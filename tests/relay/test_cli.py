"""``eskit relay``: once up to the head, or following until SIGTERM; shown by
``eskit projections status`` like any projection; bad input is one red line."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eskit
from tests import services
from tests.brokers.reading import delete_nats_stream, nats_messages
from tests.cli.conftest import invoke
from tests.processes import eskit_process


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/events.db"

    async def fill() -> None:
        async with eskit.open_store(url) as store:
            for i in range(6):
                await store.append(f"invoice-{i % 2}", [eskit.NewEvent("InvoicePaid", {"i": i})])

    asyncio.run(fill())
    return url


@pytest.fixture
def prefix() -> Iterator[str]:
    name = services.unique("cli")
    yield name
    asyncio.run(delete_nats_stream(services.nats_url(), name))


def test_until_caught_up_publishes_and_shows_in_projections_status(url: str, prefix: str) -> None:
    broker = services.nats_url()
    args = ["relay", url, "--broker", broker, "--prefix", prefix, "--partitions", "2"]
    result = invoke([*args, "--until-caught-up"])
    assert result.exit_code == 0, result.output
    assert f"relay_nats_{prefix}: position 6 of 6, lag 0" in result.output
    assert len(asyncio.run(nats_messages(broker, prefix))) == 6
    status = invoke(["projections", "status", url])
    assert f"relay_nats_{prefix}" in status.output
    again = invoke([*args, "--until-caught-up"])  # nothing new: nothing sent twice
    assert again.exit_code == 0, again.output
    assert len(asyncio.run(nats_messages(broker, prefix))) == 6


def test_follows_until_sigterm(url: str, prefix: str) -> None:
    broker = services.nats_url()
    with eskit_process("relay", url, "--broker", broker, "--prefix", prefix) as process:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if len(asyncio.run(nats_messages(broker, prefix))) == 6:
                    break
            except Exception:  # the stream is not there yet
                pass
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "relaying to" in stderr
    assert f"relay_nats_{prefix}: position 6 of 6, lag 0" in stdout


def test_bad_input_is_one_red_line(url: str, prefix: str) -> None:
    result = invoke(["relay", url, "--broker", "kafka://127.0.0.1:9092"])
    assert result.exit_code == 1
    assert "unknown broker URL" in result.output
    broker = services.nats_url()
    ok = invoke(["relay", url, "--broker", broker, "--prefix", prefix, "--until-caught-up"])
    assert ok.exit_code == 0, ok.output
    other = ["--prefix", prefix, "--partitions", "3", "--until-caught-up"]
    wrong = invoke(["relay", url, "--broker", broker, *other])
    assert wrong.exit_code == 1
    assert "has 16 partitions, not 3" in wrong.output
