"""Upcasters: pure functions that bring a stored event's old schema to the next version.

An upcaster is registered for one (type name, from_version). It receives a copy of the
stored data and returns either the data of the same type at ``from_version + 1`` (a dict),
or a list of ``(type name, version, data)`` events: several to split it, another name to
rename it, none to drop it. Chains run until each event reaches its class's current
version. Stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import msgspec

from eskit.store.model import JSONObject

Upcast: TypeAlias = tuple[str, int, JSONObject]
"""One event an upcaster produces: type name, schema version, data."""
UpcasterFunction: TypeAlias = Callable[[JSONObject], JSONObject | list[Upcast]]

_copy = msgspec.json.Decoder().decode
_encode = msgspec.json.encode


class Upcasters:
    """Upcasters by (type name, from_version)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], UpcasterFunction] = {}

    def register(
        self, name: str, from_version: int
    ) -> Callable[[UpcasterFunction], UpcasterFunction]:
        """Decorator: ``fn(data)`` turns ``name`` at ``from_version`` into newer events."""

        def add(fn: UpcasterFunction) -> UpcasterFunction:
            key = (name, from_version)
            if key in self._by_key:
                raise ValueError(f"an upcaster for {name!r} version {from_version} already exists")
            self._by_key[key] = fn
            return fn

        return add

    def get(self, name: str, version: int) -> Callable[[JSONObject], list[Upcast]] | None:
        """The upcaster for ``name`` at ``version``, always returning a list; None if none."""
        fn = self._by_key.get((name, version))
        if fn is None:
            return None

        def run(data: JSONObject) -> list[Upcast]:
            result = fn(_copy(_encode(data)))  # a copy: the stored event must stay as it is
            if isinstance(result, dict):
                return [(name, version + 1, result)]
            return list(result)

        return run

    def function(self, name: str, version: int) -> UpcasterFunction | None:
        """The function registered for ``name`` at ``version`` as given (to name it in the
        event catalog); None if none."""
        return self._by_key.get((name, version))

    def knows(self, name: str) -> bool:
        """Whether some upcaster reads events stored under ``name``."""
        return any(key[0] == name for key in self._by_key)

    def keys(self) -> list[tuple[str, int]]:
        """Every (type name, from_version) with an upcaster."""
        return sorted(self._by_key)
