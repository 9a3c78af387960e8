"""Catch-up subscriptions through ``eskit grpc``: to ``$all`` with a server-side filter,
checkpoints and caught-up messages, resumed from a checkpoint; to one stream from a
revision; and, in-process, a live subscription that falls behind and catches up again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.common import construct_filter_include_regex
from kurrentdbclient.events import CaughtUp, Checkpoint, RecordedEvent

import eskit
from eskit.grpc import reads
from eskit.grpc.auth import OPEN
from eskit.grpc.protos import shared_pb2, streams_pb2


def made(kind: str = "Made") -> NewEvent:
    return NewEvent(type=kind, data=b"{}")


def test_subscribe_to_all_with_a_filter_resumes_from_a_checkpoint(client: KurrentDBClient) -> None:
    category = f"c{uuid.uuid4().hex[:10]}"
    start = client.get_commit_position()
    client.append_to_stream(
        f"{category}-1", events=[made(), made()], current_version=StreamState.NO_STREAM
    )
    client.append_to_stream(
        f"other{category}-1", events=made(), current_version=StreamState.NO_STREAM
    )
    received: list[RecordedEvent] = []
    checkpoints: list[int] = []
    with client.subscribe_to_all(
        commit_position=start,
        filter_include=[f"{category}-"],
        filter_by_stream_name=True,
        filter_by_prefix=True,
        include_checkpoints=True,
        include_caught_up=True,
        window_size=1,
        checkpoint_interval_multiplier=1,
    ) as subscription:
        caught_up = False
        for item in subscription:
            if isinstance(item, CaughtUp):
                caught_up = True
                client.append_to_stream(
                    f"{category}-2", events=made("Live"), current_version=StreamState.NO_STREAM
                )
            elif isinstance(item, Checkpoint):
                checkpoints.append(item.commit_position)
            else:
                received.append(item)
                if item.type == "Live":
                    break
    assert caught_up
    assert [(e.stream_name, e.type) for e in received] == [
        (f"{category}-1", "Made"),
        (f"{category}-1", "Made"),
        (f"{category}-2", "Live"),
    ]
    assert checkpoints == sorted(checkpoints)
    assert checkpoints[-1] >= received[1].commit_position
    resume_at = received[1].commit_position
    with client.subscribe_to_all(
        commit_position=resume_at,
        filter_include=[construct_filter_include_regex([f"{category}-.*"])[1:-1]],
        filter_by_stream_name=True,
    ) as resumed:
        assert next(iter(resumed)).type == "Live"


def test_subscribe_to_a_stream_from_a_revision(client: KurrentDBClient) -> None:
    stream = f"order-{uuid.uuid4().hex}"
    client.append_to_stream(
        stream, events=[made(str(n)) for n in range(3)], current_version=StreamState.NO_STREAM
    )
    with client.subscribe_to_stream(
        stream, stream_position=0, include_caught_up=True
    ) as subscription:
        seen = []
        for item in subscription:
            if isinstance(item, CaughtUp):
                client.append_to_stream(stream, events=made("3"), current_version=2)
                continue
            seen.append(item.stream_position)
            if item.stream_position == 3:
                break
    assert seen == [1, 2, 3]


def _options(**fields: Any) -> Any:
    options = streams_pb2.ReadReq.Options(**fields)
    options.subscription.SetInParent()
    options.no_filter.SetInParent()
    options.uuid_option.string.SetInParent()
    return options


@pytest.mark.anyio
async def test_a_live_subscription_falls_behind_and_catches_up(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "PAGE", 2)
    options = _options(all=streams_pb2.ReadReq.Options.AllOptions(start=shared_pb2.Empty()))
    responses: AsyncIterator[Any] = reads.Reader(store).read(options, OPEN)
    await store.append("a-1", [eskit.NewEvent("A", {})])
    kinds = []
    async for sent in responses:  # an event as its bytes (wire), the rest as messages
        response = streams_pb2.ReadResp.FromString(sent) if isinstance(sent, bytes) else sent
        kind = response.WhichOneof("content")
        kinds.append(kind)
        if kind == "caught_up" and kinds.count("caught_up") == 1:
            await store.append("a-1", [eskit.NewEvent("A", {}) for _ in range(5)])
        if kinds.count("caught_up") == 2:
            break
    await responses.aclose()  # type: ignore[attr-defined]
    assert kinds == [
        "confirmation",
        "event",
        "caught_up",
        "event",
        "event",
        "fell_behind",
        "event",
        "event",
        "event",
        "caught_up",
    ]
