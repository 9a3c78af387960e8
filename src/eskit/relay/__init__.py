"""Publishing the store's events to brokers: the relay (see ``relay.Relay``)."""

from __future__ import annotations

from eskit.relay.relay import Relay, relay_runner, relay_status

__all__ = ["Relay", "relay_runner", "relay_status"]
