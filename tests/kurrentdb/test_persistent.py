"""Persistent subscriptions through ``eskit grpc`` with ``kurrentdbclient``, on SQLite and
PostgreSQL: create, get info, list, update and delete; read with ack; nack retry, park and
skip; replay parked events; to a stream, to ``$ce-``, and to ``$all`` (whole, filtered to
one category, or by any stream or event-type filter); refusals with KurrentDB's errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.common import AbstractPersistentSubscription
from kurrentdbclient.events import RecordedEvent
from kurrentdbclient.exceptions import (
    AccessDeniedError,
    AlreadyExistsError,
    KurrentDBClientError,
    NotFoundError,
)

from eskit.grpc.protos import persistent_pb2, persistent_pb2_grpc, shared_pb2
from tests.kurrentdb.readme import blocks, sections
from tests.kurrentdb.servers import GrpcProcess
from tests.kurrentdb.test_readme import SECTIONS, run
from tests.kurrentdb.test_security import Secured, secured

__all__ = ["secured"]  # the TLS server with tokens, shared fixture

TIMEOUT = 30.0
"""Seconds a read may take at most (a hang fails the test instead of the suite)."""


def group() -> str:
    return f"group-{uuid.uuid4().hex[:10]}"


def append(client: KurrentDBClient, stream: str, *types: str) -> list[NewEvent]:
    events = [NewEvent(type=kind, data=b"{}") for kind in types]
    client.append_to_stream(stream, events=events, current_version=StreamState.ANY)
    return events


def take(subscription: AbstractPersistentSubscription, count: int) -> Iterable[RecordedEvent]:
    """The next ``count`` events the subscription hands out, as they come."""
    for taken, event in enumerate(subscription, start=1):
        yield event
        if taken == count:
            return


def test_create_info_list_update_delete(client: KurrentDBClient, stream: str) -> None:
    name = group()
    client.create_subscription_to_stream(
        name, stream, message_timeout=7.5, max_retry_count=3, consumer_strategy="Pinned"
    )
    info = client.get_subscription_info(name, stream_name=stream)
    assert (info.group_name, info.event_source) == (name, stream)
    assert (info.message_timeout, info.max_retry_count) == (7.5, 3)
    assert info.consumer_strategy == "Pinned"
    assert (info.live_buffer_size, info.read_batch_size, info.max_subscriber_count) == (0, 0, 0)
    assert name in {i.group_name for i in client.list_subscriptions()}
    assert [i.group_name for i in client.list_subscriptions_to_stream(stream)] == [name]
    with pytest.raises(AlreadyExistsError):
        client.create_subscription_to_stream(name, stream)
    with pytest.raises(AlreadyExistsError, match="unique across streams"):
        client.create_subscription_to_stream(name, f"{stream}x")

    client.update_subscription_to_stream(name, stream, max_retry_count=5, message_timeout=2.0)
    info = client.get_subscription_info(name, stream_name=stream)
    assert (info.message_timeout, info.max_retry_count) == (2.0, 5)
    assert info.consumer_strategy == "Pinned"  # kept from the info the client read first

    with pytest.raises(NotFoundError):
        client.get_subscription_info(name, stream_name=f"{stream}x")  # not on that stream
    client.delete_subscription(name, stream_name=stream)
    with pytest.raises(NotFoundError):
        client.get_subscription_info(name, stream_name=stream)
    with pytest.raises(NotFoundError):
        client.delete_subscription(name, stream_name=stream)
    assert client.list_subscriptions_to_stream(stream) == []


def test_read_with_ack_resumes_after_what_was_acked(client: KurrentDBClient, stream: str) -> None:
    appended = append(client, stream, "A", "B", "C")
    name = group()
    client.create_subscription_to_stream(name, stream)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        received = []
        for event in take(subscription, 3):
            received.append(event)
            subscription.ack(event)
    assert [e.id for e in received] == [e.id for e in appended]
    assert [e.retry_count for e in received] == [0, 0, 0]
    assert [e.stream_position for e in received] == [0, 1, 2]

    # an update names a start (the client sends the info's "from the start"): ignored,
    # the group keeps its checkpoint
    client.update_subscription_to_stream(name, stream, max_retry_count=4)
    later = append(client, stream, "D")
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        event = next(iter(subscription))
        subscription.ack(event)
    assert event.id == later[0].id  # A-C were acked: only D is handed out
    info = client.get_subscription_info(name, stream_name=stream)
    assert info.parked_message_count == 0


def test_nack_retry_park_skip_and_replay_parked(client: KurrentDBClient, stream: str) -> None:
    retried, parked, skipped = append(client, stream, "Retried", "Parked", "Skipped")
    name = group()
    client.create_subscription_to_stream(name, stream, max_retry_count=2)
    seen: list[tuple[str, int | None]] = []
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        for event in subscription:
            seen.append((event.type, event.retry_count))
            if event.id == parked.id:
                subscription.nack(event, "park")
            elif event.id == skipped.id:
                subscription.nack(event, "skip")
            else:
                subscription.nack(event, "retry")  # parked once out of retries
            if seen.count(("Retried", 2)) and ("Skipped", 0) in seen and ("Parked", 0) in seen:
                break
    assert [n for kind, n in seen if kind == "Retried"] == [0, 1, 2]
    assert seen.count(("Parked", 0)) == seen.count(("Skipped", 0)) == 1

    # out of retries, the retried event is parked on the next nack's way back
    info = client.get_subscription_info(name, stream_name=stream)
    assert info.parked_message_count >= 1
    client.replay_parked_events(name, stream_name=stream)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        replayed = []
        for event in take(subscription, 2):
            replayed.append(event.id)
            subscription.ack(event)
    assert sorted(map(str, replayed)) == sorted(str(e.id) for e in (retried, parked))
    assert skipped.id not in replayed
    assert client.get_subscription_info(name, stream_name=stream).parked_message_count == 0


def test_to_all_filtered_to_a_category_and_to_ce(client: KurrentDBClient) -> None:
    category = f"c{uuid.uuid4().hex[:10]}"
    start = client.get_commit_position()
    mine = append(client, f"{category}-1", "Mine") + append(client, f"{category}-2", "Mine")
    append(client, f"other{category}-1", "Other")
    to_all, to_category = group(), group()
    client.create_subscription_to_all(
        to_all,
        commit_position=start,
        filter_include=[f"{category}-.*"],
        filter_by_stream_name=True,
    )
    client.create_subscription_to_stream(to_category, f"$ce-{category}")
    assert client.get_subscription_info(to_all).event_source == "$all"
    assert f"$ce-{category}" in {i.event_source for i in client.list_subscriptions()}
    with client.read_subscription_to_all(to_all, timeout=TIMEOUT) as subscription:
        via_all = []
        for event in take(subscription, 2):
            via_all.append(event.id)
            subscription.ack(event)
    with client.read_subscription_to_stream(
        to_category, f"$ce-{category}", timeout=TIMEOUT
    ) as subscription:
        via_ce = []
        for event in take(subscription, 2):
            via_ce.append(event.id)
            subscription.ack(event)
    assert via_all == via_ce == [e.id for e in mine]


def test_to_all_from_a_position_reads_every_category(client: KurrentDBClient) -> None:
    append(client, f"a{uuid.uuid4().hex[:8]}-1", "Before")
    first = append(client, f"a{uuid.uuid4().hex[:8]}-1", "One")
    position = client.get_commit_position()  # first's position
    later = append(client, f"b{uuid.uuid4().hex[:8]}-1", "Two")
    name = group()
    client.create_subscription_to_all(name, commit_position=position)
    with client.read_subscription_to_all(name, timeout=TIMEOUT) as subscription:
        received = []
        for event in take(subscription, 2):
            received.append(event)
            subscription.ack(event)
    # from the position, inclusive, as KurrentDB; every category
    assert [e.id for e in received] == [first[0].id, later[0].id]
    assert received[0].commit_position == position
    client.delete_subscription(name)


def test_refusals(client: KurrentDBClient, stream: str) -> None:
    with pytest.raises(NotFoundError):
        client.read_subscription_to_stream("no-such-group", stream, timeout=TIMEOUT)
    with pytest.raises(KurrentDBClientError, match="PinnedByCorrelation"):
        client.create_subscription_to_stream(
            group(), stream, consumer_strategy="PinnedByCorrelation"
        )
    with pytest.raises(KurrentDBClientError, match="not valid"):
        client.create_subscription_to_all(group(), filter_include=["a(("])


def read_ids(client: KurrentDBClient, name: str, count: int) -> list[str]:
    with client.read_subscription_to_all(name, timeout=TIMEOUT) as subscription:
        received = []
        for event in take(subscription, count):
            received.append(str(event.id))
            subscription.ack(event)
    return received


def test_to_all_with_an_event_type_prefix_and_a_stream_regex(client: KurrentDBClient) -> None:
    """Filters beyond one category (kurrentdbclient sends each as a regex: a prefix is
    ``Prefix.*``): events left out are never handed out."""
    tag = uuid.uuid4().hex[:8]
    start = client.get_commit_position()
    wanted_types = append(client, f"a{tag}-1", f"Paid{tag}", "Other", f"Paid{tag}Late")
    wanted_streams = append(client, f"b{tag}-7", "One") + append(client, f"c{tag}-7", "Two")
    append(client, f"b{tag}-8", "Three")
    by_type, by_stream = group(), group()
    client.create_subscription_to_all(
        by_type, commit_position=start, filter_include=[f"Paid{tag}.*"], filter_exclude=[]
    )
    client.create_subscription_to_all(
        by_stream,
        commit_position=start,
        filter_include=[f"^[bc]{tag}-7$"],
        filter_by_stream_name=True,
        filter_exclude=[],
    )
    assert client.get_subscription_info(by_type).event_source == "$all"
    assert read_ids(client, by_type, 2) == [str(e.id) for e in wanted_types[::2]]
    assert read_ids(client, by_stream, 2) == [str(e.id) for e in wanted_streams]
    last = append(client, f"b{tag}-7", "Four")
    assert read_ids(client, by_stream, 1) == [str(last[0].id)]


PERSISTENT_SECTIONS = (
    "Create subscription to all",
    "Read subscription to all",
    "How to write a persistent subscription consumer",
    "Update subscription to all",
    "Create subscription to stream",
    "Read subscription to stream",
    "Update subscription to stream",
    "Replay parked events",
    "Get subscription info",
    "List subscriptions",
    "List subscriptions to stream",
    "Delete subscription",
)
"""kurrentdbclient's README on persistent subscriptions, in order: it follows the usage
sections (whose events and streams it reads), so they run first, in one namespace (the
whole README runs in test_readme; this adds its persistent part)."""


@pytest.mark.slow
def test_the_readme_on_persistent_subscriptions(
    server: GrpcProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDB_URI", server.uri())
    namespace: dict[str, Any] = {}
    heading, synopsis = next((h, c) for h, c in blocks() if h == "Synopsis")
    run(synopsis.replace("localhost:2113", server.address), namespace, heading)
    try:
        for heading, code in sections(*SECTIONS, *PERSISTENT_SECTIONS):
            run(code, namespace, heading)
    finally:
        client = namespace.get("client")
        if client is not None:
            client.close()


def test_nack_stop_retries_and_ends_the_read(client: KurrentDBClient, stream: str) -> None:
    (appended,) = append(client, stream, "A")
    name = group()
    client.create_subscription_to_stream(name, stream)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        first = next(iter(subscription))
        subscription.nack(first, "stop")
        assert list(subscription) == []  # the server ended the read
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        again = next(iter(subscription))
        subscription.ack(again)
    assert first.id == again.id == appended.id
    assert (first.retry_count, again.retry_count) == (0, 1)


def test_replay_the_first_parked_only(
    client: KurrentDBClient, server: GrpcProcess, stream: str
) -> None:
    appended = append(client, stream, "A", "B")
    name = group()
    client.create_subscription_to_stream(name, stream)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        for event in take(subscription, 2):
            subscription.nack(event, "park")
    options = persistent_pb2.ReplayParkedReq.Options(  # kurrentdbclient has no stop_at
        group_name=name,
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode()),
        stop_at=1,
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = persistent_pb2_grpc.PersistentSubscriptionsStub(channel)  # type: ignore[no-untyped-call]
        stub.ReplayParked(persistent_pb2.ReplayParkedReq(options=options), timeout=TIMEOUT)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        replayed = next(iter(subscription))
        subscription.ack(replayed)
    assert replayed.id == appended[0].id
    assert client.get_subscription_info(name, stream_name=stream).parked_message_count == 1


def test_token_scopes(secured: Secured) -> None:
    """``read:invoice`` manages and reads groups over invoices only; never ``$all``."""
    tag = uuid.uuid4().hex[:8]
    admin, billing = secured.client("admin"), secured.client("billing")
    try:
        append(admin, f"invoice-{tag}", "Issued")
        name = group()
        billing.create_subscription_to_stream(name, f"invoice-{tag}")
        with billing.read_subscription_to_stream(name, f"invoice-{tag}", timeout=TIMEOUT) as sub:
            event = next(iter(sub))
            sub.ack(event)
        assert event.stream_name == f"invoice-{tag}"
        with pytest.raises(AccessDeniedError):
            billing.create_subscription_to_stream(group(), f"order-{tag}")
        with pytest.raises(AccessDeniedError):
            billing.create_subscription_to_all(group())
        other = group()
        admin.create_subscription_to_stream(other, f"order-{tag}")
        with pytest.raises(AccessDeniedError):
            billing.get_subscription_info(other, stream_name=f"order-{tag}")
        with pytest.raises(AccessDeniedError):
            billing.read_subscription_to_stream(other, f"order-{tag}", timeout=TIMEOUT)
        listed = {i.group_name for i in billing.list_subscriptions()}
        assert name in listed
        assert other not in listed
    finally:
        admin.close()
        billing.close()


def test_a_group_deleted_while_read_ends_the_read(client: KurrentDBClient, stream: str) -> None:
    append(client, stream, "A")
    name = group()
    client.create_subscription_to_stream(name, stream)
    with client.read_subscription_to_stream(name, stream, timeout=TIMEOUT) as subscription:
        event = next(iter(subscription))
        subscription.ack(event)
        client.delete_subscription(name, stream_name=stream)
        with pytest.raises(NotFoundError):  # (kurrentdbclient drops the message here)
            next(iter(subscription))
