"""Redaction: the plaintext of sensitive fields kept out of error texts and logs.

eskit decrypts sensitive fields in one place (``EventRegistry.open``), and notes there
the values it decrypted, by event, in a small bounded memo of this process (``DECRYPTED``:
never written anywhere, emptied of a subject's values when this process forgets it). An
error about a projection's event is stored, shown and logged only after ``redact``
replaced every value of that memo found in its text with ``REDACTED``:

- the value as stored and as Python and JSON would quote it (``repr`` escapes, JSON
  escapes, both twice over), whatever its case;
- each word of three characters or more of a text value (``"Ann Smith"``: ``Ann`` too);
- a date's ``repr`` (``datetime.date(1984, 2, 29)``);
- a form shorter than four characters (a short name, a number) only as a whole word, so
  that ``7`` does not blank every position that holds the digit.

It cannot recognise a value a handler transformed beyond that (hashed, reversed, split
into letters): keep personal data out of exception messages you write.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
import threading
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Final

REDACTED: Final = "«redacted»"
"""What a decrypted value reads as in an error text or a log record."""

_SHORT: Final = 4
"""Forms shorter than this are redacted as whole words only."""

_WORD = re.compile(r"\w{3,}")


class Decrypted:
    """The values eskit decrypted for the last ``capacity`` events, with their key ids.

    Thread-safe: events are decrypted on the event loop and on the stores' threads.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._by_event: collections.OrderedDict[Hashable, list[tuple[str, Any]]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def note(self, event_id: Hashable, values: list[tuple[str, Any]]) -> None:
        """Remember the ``(key id, value)`` pairs decrypted for an event (on the decoding
        hot path: kept to a few dictionary operations)."""
        if not values:
            return
        by_event = self._by_event
        with self._lock:
            if event_id in by_event:
                by_event.move_to_end(event_id)
            by_event[event_id] = values
            if len(by_event) > self.capacity:
                by_event.popitem(last=False)

    def values(self) -> list[Any]:
        """Every value remembered, newest event first."""
        with self._lock:
            noted = list(reversed(self._by_event.values()))
        return [value for pairs in noted for _, value in pairs]

    def drop_keys(self, key_ids: Iterable[str]) -> None:
        """Forget the values decrypted with these keys (their subject was forgotten)."""
        gone = set(key_ids)
        with self._lock:
            for event_id, pairs in list(self._by_event.items()):
                if any(key_id in gone for key_id, _ in pairs):
                    del self._by_event[event_id]

    def clear(self) -> None:
        with self._lock:
            self._by_event.clear()


DECRYPTED: Final = Decrypted()
"""This process's memo of decrypted values (filled by ``EventRegistry.open``)."""


def redact(text: str, values: Iterable[Any] | None = None) -> str:
    """``text`` with every form of every value (default: those in ``DECRYPTED``) that
    occurs in it replaced by ``REDACTED``."""
    folded = text.casefold()
    present = {
        form
        for value in (DECRYPTED.values() if values is None else values)
        for form in forms(value)
        if form.casefold() in folded
    }
    if not present:
        return text
    alternatives = [
        re.escape(form) if len(form) >= _SHORT else rf"(?<!\w){re.escape(form)}(?!\w)"
        for form in sorted(present, key=len, reverse=True)
    ]
    return re.sub("|".join(alternatives), REDACTED, text, flags=re.IGNORECASE)


def forms(value: Any) -> set[str]:
    """The texts under which ``value`` (decrypted JSON) may show up in a message."""
    found: set[str] = set()
    for plain in _plain(value):
        found.add(plain)
        if _quoted_as_is(plain):  # most words and numbers: no escape changes them
            continue
        for escaped in _escaped(plain):
            found.add(escaped)
            found.update(_escaped(escaped))
    found.discard("")
    return found


def _quoted_as_is(text: str) -> bool:
    """Whether ``repr`` and JSON leave ``text`` as it is between their quotes."""
    return (
        text.isascii()
        and text.isprintable()
        and "'" not in text
        and '"' not in text
        and "\\" not in text
    )


def _plain(value: Any) -> Iterator[str]:
    """The value's own texts: scalars as written, a text's words and date forms; the
    leaves of lists and objects."""
    if value is None or value == "":
        return
    if isinstance(value, bool):
        yield from (str(value), json.dumps(value))
    elif isinstance(value, int | float):
        yield from (repr(value), json.dumps(value))
    elif isinstance(value, str):
        yield value
        yield from _WORD.findall(value)
        yield from _dates(value)
    elif isinstance(value, list):
        for item in value:
            yield from _plain(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _plain(item)
    else:
        yield str(value)


def _escaped(text: str) -> tuple[str, ...]:
    """How ``repr`` and JSON quote a text, without the quotes."""
    return (
        repr(text)[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
    )


def _dates(text: str) -> Iterator[str]:
    """The ``repr`` of an ISO date or date-time, as a decoded event's field shows it."""
    if not (len(text) >= 10 and text[:4].isdigit() and text[4] == "-"):
        return
    parsed: dt.date
    try:
        parsed = dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
    except ValueError:
        return
    yield repr(parsed)
    yield str(parsed)
