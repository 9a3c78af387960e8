"""Addresses servers listen on: which are loopback only, and ``HOST:PORT`` parsing."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str, example: str = "127.0.0.1:2113") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a pair; ``ValueError`` if malformed."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {address!r}: expected HOST:PORT, e.g. {example}")
    return host.removeprefix("[").removesuffix("]"), int(port)
