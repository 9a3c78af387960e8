"""What every service module gets from the server, and how it adds itself.

A service module has ``register(server, service) -> Methods``: it adds its servicer to the
``grpc.aio`` server and returns the methods it serves, for the server features answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeAlias

import grpc

from eskit.grpc.auth import Authenticator, Tokens
from eskit.grpc.policy import AppendPolicy
from eskit.store.base import EventStore

__all__ = ["Methods", "Registrar", "Service", "Tokens"]

Methods: TypeAlias = dict[str, dict[str, tuple[str, ...]]]
"""Lower-cased full service name -> lower-cased method name -> features, as KurrentDB's
server features list them (e.g. ``{"event_store.client.streams.streams": {"read": ()}}``)."""


@dataclasses.dataclass(frozen=True)
class Service:
    """The store served, the caller check, the append policy, and where the server listens."""

    store: EventStore
    tokens: Tokens = None
    policy: AppendPolicy = dataclasses.field(default_factory=AppendPolicy)
    host: str = "127.0.0.1"
    port: int = 0

    auth: Authenticator = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "auth", Authenticator(self.tokens))


Registrar: TypeAlias = Callable[[grpc.aio.Server, Service], Methods]
