"""How deep objects and arrays nest, measured without recursing: the store's nesting limit
(``rules.MAX_NESTING``) must hold for any input, and a recursive measure would itself fail
with ``RecursionError`` on the documents it is meant to refuse.

Three measures: ``may_nest_too_deep`` reads encoded JSON with a few C calls (cheap enough for
every append), ``check_nesting`` walks Python values and names the path where they go too
deep, and ``too_deep_at`` names that path in JSON text that the parser cannot read (request
bodies, lines of an export file); the last two only for what the first cannot clear.
"""

from __future__ import annotations

import json
from typing import Any, Final


def check_nesting(value: object, where: str, root: str, limit: int) -> None:
    """``ValueError`` naming the path (``data.a[0].b``) if objects and arrays in ``value``
    are nested deeper than ``limit``, ``value`` counted.

    Walks with a list of its own instead of recursing, so that no depth can exhaust the
    interpreter's stack.
    """
    Trail = tuple[Any, object]  # (the trail of the parent, the key or index here)
    todo: list[tuple[Any, int, Trail]] = [(value, 1, (None, root))]
    while todo:
        container, depth, trail = todo.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, _CONTAINERS):
                if depth >= limit:
                    path = _path((trail, key))
                    raise ValueError(f"{where} is nested deeper than {limit} levels, at {path}")
                todo.append((item, depth + 1, (trail, key)))


_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
"""What nests (only dict and list are JSON, but the others must not recurse either)."""


def _path(trail: tuple[Any, object]) -> str:
    """``data.a[0].b`` from a trail of (parent trail, key) pairs; long keys shortened."""
    parts: list[str] = []
    while trail[0] is not None:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{str(key)[:40]}")
    return str(trail[1]) + "".join(reversed(parts))


def may_nest_too_deep(json: bytes, limit: int) -> bool:
    """Whether well-formed JSON nests objects and arrays deeper than ``limit``, found in C.

    Not if it is too short or holds too few brackets to. Else the strings are cut out
    (escaped backslashes and quotes first, then what lies between quotes), the brackets
    alone are kept, all of one kind (JSON nests the same whatever the kind), and each round
    removes the innermost pairs: a document ``d`` deep is gone after ``d`` rounds.
    """
    if not opens_enough(json, limit):
        return False
    unescaped = json.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    brackets = outside_strings.translate(_ONE_KIND, _NOT_BRACKETS)
    for removed in range(limit):
        if len(brackets) <= 2 * (limit - removed):  # too few pairs left to be that deep
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


def too_deep_at(text: str, limit: int) -> str | None:
    """The path (``events[0].data.a[0]``) of the first object or array in JSON ``text``
    that is nested deeper than ``limit``, or None.

    Reads the text with a list of its own, never recursing: it is what answers for JSON too
    deep for the parser (which recurses). Strings are skipped by the standard library's scanner.
    """
    places: list[str | int] = []  # in each open container: the key or index reached
    i, end = 0, len(text)
    try:
        while i < end:
            char = text[i]
            if char == '"':
                value, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
                after = i
                while after < end and text[after] in " \t\r\n":
                    after += 1
                if places and isinstance(places[-1], str) and text[after : after + 1] == ":":
                    places[-1] = value  # a key of the object
                continue
            if char in "{[":
                if len(places) >= limit:
                    return _path_of(places)
                places.append(0 if char == "[" else "")
            elif char in "}]" and places:
                places.pop()
            elif char == "," and places and isinstance(places[-1], int):
                places[-1] += 1
            i += 1
    except ValueError:  # not JSON after all: the parser's error will do
        return None
    return None


def _path_of(places: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p[:40]}" for p in places).lstrip(".")


def opens_enough(json: bytes, limit: int) -> bool:
    """Whether JSON is long enough and holds enough brackets to nest deeper than ``limit``
    (each level takes a pair): a bound in two C calls, cheap enough for every append."""
    return len(json) > 2 * limit and len(json.translate(None, _NOT_BRACKETS)) > 2 * limit


_ONE_KIND: Final = bytes.maketrans(b"{[}]", b"(())")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"{}[]")
