"""One ``grpc.aio`` server speaking KurrentDB's API over one eskit store.

It runs on the store's event loop and uses the store's async face: a call costs no thread
hand-off, and a catch-up subscription is a coroutine, not a thread held for its lifetime.

TLS takes a certificate and key (PEM files). Without them the server is insecure, which it
only allows on a loopback address unless ``unsafe_insecure`` says otherwise: anyone who can
reach it could read the traffic, and the credentials in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from eskit.addresses import is_loopback, split_address
from eskit.grpc import gossip, persistent, streams
from eskit.grpc.auth import AuthInterceptor
from eskit.grpc.features import Unserved, features_handler
from eskit.grpc.policy import AppendPolicy
from eskit.grpc.service import Methods, Registrar, Service, Tokens
from eskit.store.base import EventStore

log = logging.getLogger("eskit.grpc")

DEFAULT_LISTEN = "127.0.0.1:2113"
GRACE = 5.0
"""Seconds calls in progress get to finish when the server stops."""
MAX_MESSAGE = 64 * 1024 * 1024
"""Largest request or response message in bytes (appends are bounded by the store's
``max_event_size`` per event)."""


SERVICES: tuple[Registrar, ...] = (streams.register, persistent.register, gossip.register)
"""The service modules the server serves (server features are added last, listing them)."""


@dataclasses.dataclass(frozen=True)
class GrpcSettings:
    listen: str = DEFAULT_LISTEN
    certificate: Path | None = None
    key: Path | None = None
    tokens: Tokens = None
    unsafe_insecure: bool = False
    """Serve without TLS on an address other hosts can reach."""
    policy: AppendPolicy = dataclasses.field(default_factory=AppendPolicy)

    @property
    def tls(self) -> bool:
        return self.certificate is not None

    def check(self) -> tuple[str, int]:
        """Host and port to listen on; ``ValueError`` for a bad address, half a TLS pair,
        or insecure serving off loopback without ``unsafe_insecure``."""
        host, port = split_address(self.listen, DEFAULT_LISTEN)
        if (self.certificate is None) != (self.key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        for path in (self.certificate, self.key):
            if path is not None and not path.is_file():
                raise ValueError(f"no such file: {path}")
        if not self.tls and not self.unsafe_insecure and not is_loopback(host):
            raise ValueError(
                f"refusing to serve without TLS on {host}: anyone on the network could read"
                " the events and the credentials. Give --tls-cert and --tls-key, listen on"
                " 127.0.0.1, or pass --unsafe-insecure if that is what you want"
            )
        return host, port


class GrpcServer:
    """``await server.start()`` listens (the store must be open); ``await server.stop()``."""

    def __init__(self, store: EventStore, settings: GrpcSettings | None = None) -> None:
        self.store = store
        self.settings = settings or GrpcSettings()
        self.host, self.port = self.settings.check()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Listen; return the port (the one chosen when the settings say 0)."""
        settings = self.settings
        service = Service(self.store, settings.tokens, settings.policy)
        server = grpc.aio.server(
            interceptors=[AuthInterceptor(service.auth)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.so_reuseport", 0),  # a second server on the same port fails
                # KurrentDB's clients ping every 10 s (Node.js's, even with no call open):
                # allow it, or the server answers GOAWAY "too many pings" and drops them
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if settings.certificate is not None and settings.key is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.key.read_bytes(), settings.certificate.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        service = dataclasses.replace(service, host=self.host, port=port)
        methods: Methods = {}
        for register in SERVICES:
            methods.update(register(server, service))
        server.add_generic_rpc_handlers((features_handler(methods), Unserved()))
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float = GRACE) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def serve(self, started: Callable[[int], None] | None = None) -> None:
        """Start, then run until cancelled (Ctrl-C), then stop."""
        port = await self.start()
        if started is not None:
            started(port)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())
