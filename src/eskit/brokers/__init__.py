"""Brokers that carry the store's events to other machines: NATS JetStream, Redis Streams
and RabbitMQ, all with one message format (``message``). Each broker's client library is
imported only by its own module."""

from __future__ import annotations

from eskit.brokers.publisher import Publisher, publisher_for

__all__ = ["Publisher", "publisher_for"]
