"""What clients ask besides streams: gossip (``kurrentdb+discover://``), server features,
the services eskit does not serve; bad requests answered with statuses; the raw-append
policy of an application (``--app``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import BadRequestError, GrpcError, KurrentDBClientError

from eskit.grpc.protos import SupportedMethods, shared_pb2, streams_pb2, streams_pb2_grpc
from tests.kurrentdb.servers import GrpcProcess


def test_discover_connects_through_gossip(server: GrpcProcess) -> None:
    client = KurrentDBClient(server.uri(discover=True))
    (member,) = client.read_gossip()
    assert (member.state, member.address, member.port) == (
        "NODE_STATE_LEADER",
        "127.0.0.1",
        server.port,
    )
    stream = f"order-{uuid.uuid4().hex}"
    client.append_to_stream(
        stream, events=NewEvent(type="A", data=b"{}"), current_version=StreamState.NO_STREAM
    )
    assert len(client.get_stream(stream)) == 1
    client.close()


def test_server_features_and_unserved_services(server: GrpcProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        features = channel.unary_unary(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
            request_serializer=shared_pb2.Empty.SerializeToString,
            response_deserializer=SupportedMethods.FromString,
        )(shared_pb2.Empty())
        served = {(m.service_name, m.method_name) for m in features.methods}
        assert ("event_store.client.streams.streams", "batchappend") in served
        assert ("event_store.client.gossip.gossip", "read") in served
        for service in ("projections.Projections", "users.Users", "operations.Operations"):
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/event_store.client.{service}/Create"
            )
            with pytest.raises(grpc.RpcError) as refused:
                call(b"")
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "eskit" in str(refused.value.details())
            assert "does not serve KurrentDB's" in str(refused.value.details())


def test_projections_through_the_client_are_unimplemented(client: KurrentDBClient) -> None:
    with pytest.raises(KurrentDBClientError, match="does not serve KurrentDB's projections"):
        client.create_projection(name="p", query="fromAll()")


def read(channel: grpc.Channel, options: streams_pb2.ReadReq.Options) -> list[object]:
    stub = streams_pb2_grpc.StreamsStub(channel)  # type: ignore[no-untyped-call]
    return list(stub.Read(streams_pb2.ReadReq(options=options)))


def stream_options(stream: str) -> streams_pb2.ReadReq.Options:
    options = streams_pb2.ReadReq.Options(count=10)
    options.stream.stream_identifier.stream_name = stream.encode()
    options.stream.start.SetInParent()
    options.no_filter.SetInParent()
    options.uuid_option.string.SetInParent()
    return options


def test_bad_requests_get_statuses_and_the_server_stays_up(server: GrpcProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        bad_name = streams_pb2.ReadReq.Options(count=1)
        bad_name.stream.stream_identifier.stream_name = b""
        bad_name.stream.start.SetInParent()
        with pytest.raises(grpc.RpcError) as empty:
            read(channel, bad_name)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_regex = streams_pb2.ReadReq.Options(count=1)
        bad_regex.all.start.SetInParent()
        bad_regex.filter.stream_identifier.regex = "(unclosed"
        with pytest.raises(grpc.RpcError) as regex:
            read(channel, bad_regex)
        assert regex.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not valid" in str(regex.value.details())
        stub = streams_pb2_grpc.StreamsStub(channel)  # type: ignore[no-untyped-call]
        message = streams_pb2.AppendReq(
            proposed_message=streams_pb2.AppendReq.ProposedMessage(data=b"{}")
        )
        with pytest.raises(grpc.RpcError) as headless:
            stub.Append(iter([message]))
        assert headless.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "starts with its options" in str(headless.value.details())
        stream = f"order-{uuid.uuid4().hex}"
        options = streams_pb2.AppendReq(options=streams_pb2.AppendReq.Options())
        options.options.stream_identifier.stream_name = stream.encode()
        options.options.any.SetInParent()

        def proposed(data: bytes) -> streams_pb2.AppendReq:
            message = streams_pb2.AppendReq.ProposedMessage(data=data, metadata={"type": "A"})
            message.id.string = str(uuid.uuid4())
            return streams_pb2.AppendReq(proposed_message=message)

        too_many = [options, *(proposed(b"{}") for _ in range(10_001))]
        too_big = [options, proposed(b"{}"), proposed(b"x" * (1024 * 1024 + 1))]
        for requests, said in ((too_many, "at most 10000 events"), (too_big, "the limit is")):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Append(iter(requests))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert said in str(refused.value.details())
        written = stub.Read(streams_pb2.ReadReq(options=stream_options(stream)))
        assert [r.WhichOneof("content") for r in written] == ["stream_not_found"]
    client = KurrentDBClient(server.uri())
    with pytest.raises(GrpcError, match="needs a type"):
        client.append_to_stream(
            "order-x", events=NewEvent(type="", data=b"{}"), current_version=StreamState.ANY
        )
    assert client.get_commit_position() >= 0
    client.close()


@pytest.fixture
def with_app(tmp_path: Path) -> Iterator[GrpcProcess]:
    options = ["--app", "tests.kurrentdb.apps:invoicing_with_lab"]
    with GrpcProcess(f"sqlite:///{tmp_path}/events.db", options) as process:
        yield process


def test_an_application_refuses_what_it_cannot_read(with_app: GrpcProcess) -> None:
    client = KurrentDBClient(with_app.uri())
    tag = uuid.uuid4().hex[:8]
    poison = NewEvent(type="Poison", data=b'{"dose":1}')
    with pytest.raises(BadRequestError, match="'Poison' is not registered"):
        client.append_to_stream(
            f"invoice-{tag}", events=[poison, poison], current_version=StreamState.ANY
        )
    with pytest.raises(GrpcError, match="'Poison' is not registered"):
        client.append_to_stream(f"invoice-{tag}", events=poison, current_version=StreamState.ANY)
    with pytest.raises(GrpcError, match="not a JSON object"):
        client.append_to_stream(
            f"invoice-{tag}",
            events=NewEvent(type="Poison", data=b"[1]"),
            current_version=StreamState.ANY,
        )
    client.append_to_stream(f"lab-{tag}", events=poison, current_version=StreamState.NO_STREAM)
    assert [e.type for e in client.get_stream(f"lab-{tag}")] == ["Poison"]
    with pytest.raises(KurrentDBClientError):
        client.get_stream(f"invoice-{tag}")
    client.close()
    assert with_app.stop() == 0  # SIGTERM: the server stops and closes the store
    assert "stopped serving sqlite:///" in with_app.output()
