"""Testing tools shipped with eskit: the event store conformance suite and model test,
given/when/then specs for aggregates (``Spec``) and projections (``ProjectionSpec``), the
golden fixtures of stored events (``eskit.testing.golden``), the consumer group
conformance suite (``GroupConformance``) and the broker consumer conformance suite
(``eskit.testing.brokers``).

Third-party backends run the same checks as eskit's own (needs pytest, anyio, hypothesis).
"""

from __future__ import annotations

import pytest

# The suite lives in the package, not in a test file: ask pytest to rewrite its asserts
# anyway, so a failure shows the values compared and not a bare AssertionError.
pytest.register_assert_rewrite(
    "eskit.testing.conformance", "eskit.testing.brokers", "eskit.testing.groups"
)

from eskit.testing.conformance import EventStoreConformance, store_model_test  # noqa: E402
from eskit.testing.golden import (  # noqa: E402
    check_event_fixtures,
    write_fixture,
    write_old_fixture,
)
from eskit.testing.groups import GroupConformance  # noqa: E402
from eskit.testing.projections import ProjectionSpec  # noqa: E402
from eskit.testing.specs import Spec  # noqa: E402

__all__ = [
    "EventStoreConformance",
    "GroupConformance",
    "ProjectionSpec",
    "Spec",
    "check_event_fixtures",
    "store_model_test",
    "write_fixture",
    "write_old_fixture",
]
