"""Testing tools shipped with eskit: the event store conformance suite and model test,
and the golden fixtures of stored events (``eskit.testing.golden``).

Third-party backends run the same checks as eskit's own (needs pytest, anyio, hypothesis).
"""

from __future__ import annotations

import pytest

# The suite lives in the package, not in a test file: ask pytest to rewrite its asserts
# anyway, so a failure shows the values compared and not a bare AssertionError.
pytest.register_assert_rewrite("eskit.testing.conformance")

from eskit.testing.conformance import EventStoreConformance, store_model_test  # noqa: E402
from eskit.testing.golden import (  # noqa: E402
    check_event_fixtures,
    write_fixture,
    write_old_fixture,
)

__all__ = [
    "EventStoreConformance",
    "check_event_fixtures",
    "store_model_test",
    "write_fixture",
    "write_old_fixture",
]
