"""What a projection's failure says, wherever it is stored, shown or logged.

Every kind of projection worker (the runner, partitioned workers, broker consumers,
process managers, inline projections, the admin's rebuilds) turns a handler's error into
text with ``describe`` and logs it with ``log_failure``, and nothing else: that is how the
plaintext of a sensitive field the handler saw (a ``KeyError`` of a decrypted name) never
reaches ``eskit_projections.error``, ``eskit projections status``, the admin pages or a
log record (``eskit.domain.redaction``).
"""

from __future__ import annotations

import logging
from typing import Final

from eskit.domain.redaction import REDACTED, redact

FORGOTTEN_ERROR: Final = f"{REDACTED}: its data subject was forgotten"
"""What a stored error about a forgotten subject's event reads as (``scrubbed``)."""


class RedactedError(Exception):
    """Stands in for a handler's error in log records: its text redacted, its traceback
    (where the code failed) kept."""


def describe(error: BaseException) -> str:
    """``Type: message`` of ``error``, with every value eskit decrypted redacted."""
    return redact(f"{type(error).__name__}: {error}")


def log_failure(
    logger: logging.Logger,
    message: str,
    *args: object,
    error: BaseException,
    level: int = logging.ERROR,
) -> None:
    """Log ``message`` with ``error``'s traceback, redacted: the record's ``exc_info``
    holds a ``RedactedError`` (and its causes, redacted alike), never ``error`` itself."""
    logger.log(level, message, *args, exc_info=redacted(error))


def redacted(error: BaseException, depth: int = 8) -> RedactedError:
    """A ``RedactedError`` saying what ``error`` says, redacted, with its traceback and
    its cause (or context) redacted alike."""
    stand_in = RedactedError(describe(error)).with_traceback(error.__traceback__)
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    stand_in.__suppress_context__ = True
    if cause is not None and depth > 0:
        stand_in.__cause__ = redacted(cause, depth - 1)
    return stand_in


def scrubbed(text: str) -> str:
    """A stored error about a forgotten subject's event: its type, nothing of its text."""
    kind, colon, _ = text.partition(":")
    return f"{kind}: {FORGOTTEN_ERROR}" if colon and kind.isidentifier() else FORGOTTEN_ERROR
