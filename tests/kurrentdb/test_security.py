"""TLS and credentials: KurrentDB's Basic credentials are eskit tokens (username = the
token's name, password = the token) with the HTTP API's scopes; insecure serving only on
loopback unless forced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import CaughtUp
from kurrentdbclient.exceptions import AccessDeniedError, UnauthenticatedError

from eskit.grpc.protos import (
    SupportedMethods,
    gossip_pb2_grpc,
    shared_pb2,
    streams_pb2,
    streams_pb2_grpc,
)
from eskit.grpc.server import GrpcSettings
from eskit.web.tokens import TokenFile
from tests.cli.conftest import invoke
from tests.kurrentdb.conftest import BACKENDS, store_url
from tests.kurrentdb.servers import GrpcProcess
from tests.kurrentdb.tls import self_signed


class Secured:
    def __init__(self, server: GrpcProcess, certificate: Path, tokens: dict[str, str]) -> None:
        self.server, self.tokens = server, tokens
        self.certificate_path, self.certificate = certificate, certificate.read_bytes()

    def client(self, name: str, token: str | None = None) -> KurrentDBClient:
        user = f"{name}:{token or self.tokens[name]}"
        return KurrentDBClient(
            self.server.uri(tls=True, user=user), root_certificates=self.certificate
        )

    def client_with_ca_file(self, name: str) -> KurrentDBClient:
        """As docs/kurrentdb.md shows it: the certificate named in the connection string."""
        uri = self.server.uri(tls=True, user=f"{name}:{self.tokens[name]}")
        return KurrentDBClient(f"{uri}&tlsCAFile={self.certificate_path}")


@pytest.fixture(scope="module", params=BACKENDS)
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    file = TokenFile(directory / "tokens.json")
    tokens = {
        "admin": file.create("admin", ["admin"]),
        "reader": file.create("reader", ["read"]),
        "billing": file.create("billing", ["read:invoice", "write:invoice"]),
    }
    options = ["--tls-cert", str(cert), "--tls-key", str(key), "--tokens", str(file.path)]
    with GrpcProcess(store_url(request.param, directory), options) as server:
        yield Secured(server, cert, tokens)


def event() -> NewEvent:
    return NewEvent(type="Made", data=b"{}")


def test_tokens_and_their_scopes_over_tls(secured: Secured) -> None:
    tag = uuid.uuid4().hex[:8]
    invoice, order = f"invoice-{tag}", f"order-{tag}"
    admin, reader = secured.client("admin"), secured.client("reader")
    billing = secured.client_with_ca_file("billing")
    start = admin.get_commit_position()
    admin.append_to_stream(order, events=event(), current_version=StreamState.NO_STREAM)
    billing.append_to_stream(
        invoice, events=[event(), event()], current_version=StreamState.NO_STREAM
    )
    assert len(reader.get_stream(order)) == 1
    with pytest.raises(AccessDeniedError):
        reader.append_to_stream(order, events=event(), current_version=StreamState.ANY)
    with pytest.raises(AccessDeniedError):
        reader.append_to_stream(order, events=[event(), event()], current_version=StreamState.ANY)
    with pytest.raises(AccessDeniedError):
        billing.append_to_stream(order, events=event(), current_version=StreamState.ANY)
    with pytest.raises(AccessDeniedError):
        billing.get_stream(order)
    with pytest.raises(AccessDeniedError):
        billing.delete_stream(order, current_version=StreamState.ANY)
    seen = {e.stream_name for e in billing.read_all(commit_position=start)}
    assert seen == {invoice}
    assert {e.stream_name for e in reader.read_all(commit_position=start)} == {invoice, order}
    with billing.subscribe_to_all(commit_position=start, include_caught_up=True) as subscription:
        live = []
        for item in subscription:
            if isinstance(item, CaughtUp):
                break
            live.append(item.stream_name)
    assert live == [invoice, invoice]
    for client in (admin, reader, billing):
        client.close()


def test_missing_and_wrong_credentials_are_unauthenticated(secured: Secured) -> None:
    credentials = grpc.ssl_channel_credentials(secured.certificate)
    with grpc.secure_channel(secured.server.address, credentials) as channel:
        request = streams_pb2.ReadReq(options=streams_pb2.ReadReq.Options(count=1))
        request.options.all.start.SetInParent()
        with pytest.raises(grpc.RpcError) as anonymous:
            list(streams_pb2_grpc.StreamsStub(channel).Read(request))  # type: ignore[no-untyped-call]
        features = channel.unary_unary(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
            request_serializer=shared_pb2.Empty.SerializeToString,
            response_deserializer=SupportedMethods.FromString,
        )(shared_pb2.Empty())
        gossip = gossip_pb2_grpc.GossipStub(channel).Read(shared_pb2.Empty())  # type: ignore[no-untyped-call]
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "this server needs credentials" in str(anonymous.value.details())
    assert features.methods  # gossip and server features answer anyone
    assert len(gossip.members) == 1
    impostor = secured.client("admin", secured.tokens["reader"])
    with pytest.raises(UnauthenticatedError):
        impostor.get_stream("order-1")
    revoked = secured.client("nobody", "eskit_nope")
    with pytest.raises(UnauthenticatedError):
        revoked.append_to_stream("order-1", events=event(), current_version=StreamState.ANY)
    for client in (impostor, revoked):
        client.close()


def test_insecure_serving_is_refused_off_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    refused = invoke(["grpc", url, "--listen", "0.0.0.0:2113"])
    assert refused.exit_code == 1
    assert "refusing to serve without TLS on 0.0.0.0" in refused.stderr
    assert GrpcSettings("0.0.0.0:0", unsafe_insecure=True).check() == ("0.0.0.0", 0)
    assert GrpcSettings("[::1]:2113").check() == ("::1", 2113)
    half = invoke(["grpc", url, "--tls-cert", str(tmp_path / "cert.pem")])
    assert half.exit_code == 1
    assert "TLS needs both a certificate and its key" in half.stderr
    bad = invoke(["grpc", url, "--listen", "nowhere"])
    assert "expected HOST:PORT" in bad.stderr
