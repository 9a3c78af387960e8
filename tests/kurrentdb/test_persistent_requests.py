"""Persistent subscription requests, for all inputs. KurrentDB's settings onto eskit's group
settings: what maps comes back in the info answer as it was given; what cannot map is
refused with a message, never half taken. Any create, get info, replay or delete is answered
or refused on purpose (a status eskit chose), never ``INTERNAL``. In-process, over SQLite."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
from eskit.grpc.auth import OPEN, Authenticator
from eskit.grpc.errors import Refused
from eskit.grpc.groups import info, settings_of
from eskit.grpc.persistent import PersistentSubscriptions
from eskit.grpc.protos import persistent_pb2
from eskit.subscriptions import Group, Groups, Source
from tests.kurrentdb.test_refusals import directory, failure, refused_on_purpose

__all__ = ["directory"]  # a folder for the stores, shared fixture

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


U64 = st.integers(min_value=0, max_value=2**64 - 1)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
"""``stop_at`` of ``ReplayParkedReq`` is an ``int64``."""
I32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
names = st.one_of(
    st.sampled_from(["order-1", "$ce-order", "$ce-", "$all", "$$order-1", ""]),
    st.text(max_size=210),
)
Options = persistent_pb2.CreateReq.Options


@st.composite
def create_options(draw: st.DrawFn) -> Any:
    options = Options(group_name=draw(st.one_of(st.just("g"), st.text(max_size=210))))
    settings = options.settings
    settings.message_timeout_ms = draw(I32)
    settings.max_retry_count = draw(I32)
    settings.consumer_strategy = draw(st.sampled_from(["RoundRobin", "Pinned", "", "x"]))
    settings.revision = draw(U64)
    shape = draw(st.sampled_from(["stream", "all", "old", None]))
    if shape == "stream":
        options.stream.stream_identifier.stream_name = draw(names).encode()
        where = draw(st.sampled_from(["revision", "start", "end", None]))
        if where == "revision":
            options.stream.revision = draw(U64)
        elif where is not None:
            getattr(options.stream, where).SetInParent()
    elif shape == "all":
        where = draw(st.sampled_from(["position", "start", "end", None]))
        if where == "position":
            options.all.position.commit_position = draw(U64)
        elif where is not None:
            getattr(options.all, where).SetInParent()
        if draw(st.booleans()):
            expression = draw(st.sampled_from(["stream_identifier", "event_type"]))
            given = getattr(options.all.filter, expression)
            given.regex = draw(st.one_of(st.just("^order-.*$"), st.text(max_size=12)))
            given.prefix.extend(draw(st.lists(st.text(max_size=8), max_size=2)))
    elif shape == "old":
        options.stream_identifier.stream_name = draw(names).encode()
    return options


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(create_options(), I64)
def test_any_management_request_is_answered_or_refused_on_purpose(
    directory: Path, options: Any, stop_at: int
) -> None:
    """Create, then get info, replay and delete the same group: each call is answered, or
    refused with a status eskit chose, never ``INTERNAL``."""

    async def check() -> None:
        store = eskit.open_store(f"sqlite:///{directory}/{uuid.uuid4().hex}.db")
        async with store:
            await exchange(store)

    async def exchange(store: eskit.EventStore) -> None:
        await store.append("order-1", [eskit.NewEvent("Made", {"n": n}) for n in range(3)])
        service = PersistentSubscriptions(Groups(store), Authenticator(None))
        await service.ready()
        named = persistent_pb2.DeleteReq.Options(group_name=options.group_name)
        if options.WhichOneof("stream_option") == "all":
            named.all.SetInParent()
        else:
            given = options.stream.stream_identifier.stream_name or (
                options.stream_identifier.stream_name
            )
            named.stream_identifier.stream_name = given
        replay = persistent_pb2.ReplayParkedReq.Options(
            group_name=named.group_name, stop_at=stop_at
        )
        if named.HasField("all"):
            replay.all.SetInParent()
        else:
            replay.stream_identifier.CopyFrom(named.stream_identifier)
        for call in (
            service.create(OPEN, options),
            service.get_info(OPEN, named),
            service.replay_parked(OPEN, replay),
            service.delete(OPEN, named),
        ):
            error = await failure(call)
            assert error is None or refused_on_purpose(error), repr(error)

    asyncio.run(check())
