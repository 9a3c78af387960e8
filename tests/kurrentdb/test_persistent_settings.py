"""KurrentDB's persistent subscription settings onto eskit's group settings, for all inputs:
what maps comes back in the info answer as it was given; what cannot map is refused with a
message, never half taken."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eskit.grpc.errors import Refused
from eskit.grpc.groups import info, settings_of
from eskit.grpc.protos import persistent_pb2
from eskit.subscriptions import Group, Source

Create = persistent_pb2.CreateReq.Settings
Update = persistent_pb2.UpdateReq.Settings
STRATEGIES = {"RoundRobin": "RoundRobin", "DispatchToSingle": "RoundRobin", "Pinned": "Pinned"}


def group_with(settings: Create) -> Group:
    return Group("g", Source.stream("order-1"), settings_of(settings, create=True), 0, 0)


@given(
    timeout_ms=st.integers(1, 10**9),
    retries=st.integers(0, 2**31 - 1),
    strategy=st.sampled_from(sorted(STRATEGIES)),
    ignored=st.integers(0, 2**31 - 1),
)
def test_what_maps_reads_back_as_given(
    timeout_ms: int, retries: int, strategy: str, ignored: int
) -> None:
    settings = Create(
        message_timeout_ms=timeout_ms,
        max_retry_count=retries,
        consumer_strategy=strategy,
        live_buffer_size=ignored,
        read_batch_size=ignored,
        history_buffer_size=ignored,
        min_checkpoint_count=ignored,
        max_checkpoint_count=ignored,
        max_subscriber_count=ignored,
    )
    shown = info(group_with(settings))
    assert shown.message_timeout_milliseconds == timeout_ms
    assert shown.max_retry_count == retries
    assert shown.named_consumer_strategy == STRATEGIES[strategy]
    assert shown.live_buffer_size == shown.read_batch_size == 0  # ignored, said so
    assert group_with(settings).settings.retry_backoff == 0  # retried at once


@given(ticks=st.integers(10_000, 10**13))
def test_a_timeout_in_ticks_is_taken_to_the_millisecond(ticks: int) -> None:
    settings = settings_of(Create(message_timeout_ticks=ticks, consumer_strategy="Pinned"), True)
    assert settings.message_timeout == (ticks // 10_000) / 1000


def test_no_timeout_is_kurrentdbs_default_and_updates_name_the_strategy_by_number() -> None:
    settings = settings_of(
        Update(named_consumer_strategy=persistent_pb2.UpdateReq.Pinned), create=False
    )
    assert (settings.message_timeout, settings.strategy) == (30.0, "pinned")


@given(strategy=st.text().filter(lambda s: s not in STRATEGIES and s != ""))
def test_other_strategies_are_refused(strategy: str) -> None:
    with pytest.raises(Refused, match="consumer strategy"):
        settings_of(Create(consumer_strategy=strategy), create=True)


def test_a_negative_retry_count_is_refused() -> None:
    with pytest.raises(Refused, match="max_retry_count"):
        settings_of(Create(max_retry_count=-1, consumer_strategy="RoundRobin"), create=True)
