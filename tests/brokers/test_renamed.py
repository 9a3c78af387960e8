"""The consumers' old names and modules still work for one release, with a
``DeprecationWarning`` naming the new home; the new names load one broker's client only."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from eskit.projections.consumers import NatsConsumer, RabbitConsumer, RedisConsumer
from eskit.projections.consumers.base import BrokerWorker, drop_consumer

OLD = [
    ("eskit.projections.consumer", "JetStreamConsumer", NatsConsumer),
    ("eskit.projections.consumer", "BrokerWorker", BrokerWorker),
    ("eskit.projections.consumer", "drop_consumer", drop_consumer),
    ("eskit.projections.redis_consumer", "RedisStreamConsumer", RedisConsumer),
    ("eskit.projections.rabbit_consumer", "RabbitConsumer", RabbitConsumer),
]


@pytest.mark.parametrize(("module", "name", "new"), OLD)
def test_an_old_name_warns_and_gives_the_new_one(module: str, name: str, new: object) -> None:
    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{name} is deprecated: use eskit\."):
        assert getattr(old, name) is new


def test_a_name_that_never_was_is_an_attribute_error() -> None:
    old = importlib.import_module("eskit.projections.consumer")
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        old.Nope  # noqa: B018


def test_one_consumer_loads_its_own_broker_client_only() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from eskit.projections.consumers import RedisConsumer;"
            " print(sorted(m for m in ('nats', 'aio_pika', 'redis') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "['redis']"
