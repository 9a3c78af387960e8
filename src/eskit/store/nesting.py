"""How deep objects and arrays nest, measured without recursing: the store's nesting limit
(``rules.MAX_NESTING``) must hold for any input, and a recursive measure would itself fail
with ``RecursionError`` on the documents it is meant to refuse.

Two measures: ``may_nest_too_deep`` reads encoded JSON with a few C calls (cheap enough for
every append), ``check_nesting`` walks Python values and names the path where they go too
deep (only for what the first cannot clear).
"""

from __future__ import annotations

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


def opens_enough(json: bytes, limit: int) -> bool:
    """Whether JSON is long enough and holds enough brackets to nest deeper than ``limit``
    (each level takes a pair): a bound in two C calls, cheap enough for every append."""
    return len(json) > 2 * limit and len(json.translate(None, _NOT_BRACKETS)) > 2 * limit


_ONE_KIND: Final = bytes.maketrans(b"{[}]", b"(())")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"{}[]")
