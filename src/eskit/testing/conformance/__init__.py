"""The conformance suite every event store backend must pass, and a model-based test.

A backend is done when it passes this suite: the contract (DESIGN.md, ``EventStore``) is
checked here once, so the memory, SQLite and PostgreSQL stores, and third-party ones, cannot
drift apart. Subclass ``EventStoreConformance`` in a test module and say how to make a store::

    from eskit.testing import EventStoreConformance, store_model_test

    class TestMyStore(EventStoreConformance):
        def make_store(self, tmp_path, **options):
            return MyStore(tmp_path / "events", **options)

    TestMyStoreModel = store_model_test(lambda directory: MyStore(directory / "events")).TestCase

``make_store`` must return a new, empty, unopened store on every call and pass ``options``
(``clock=``, ``max_event_size=``) to the backend. The suite needs pytest, anyio's pytest
plugin and hypothesis (eskit's ``dev`` extra).

The tests live in one mixin per area (``appends``, ``multi``, ``reads``, ``subscriptions``,
``lifecycle``, ``snapshots``, ``listing``, ``validation``, ``raw``); ``helpers`` holds what they
share, ``model`` the model test.
"""

from __future__ import annotations

from eskit.testing.conformance.appends import AppendConformance
from eskit.testing.conformance.lifecycle import LifecycleConformance
from eskit.testing.conformance.listing import ListingConformance
from eskit.testing.conformance.model import store_model_test
from eskit.testing.conformance.multi import MultiAppendConformance
from eskit.testing.conformance.raw import RawPayloadConformance
from eskit.testing.conformance.reads import ReadConformance
from eskit.testing.conformance.snapshots import SnapshotConformance
from eskit.testing.conformance.subscriptions import SubscriptionConformance
from eskit.testing.conformance.validation import ValidationConformance

__all__ = ["EventStoreConformance", "store_model_test"]


# pytest collects inherited tests in reverse MRO order, so the areas are listed last first:
# the suite runs appends, multi, reads, subscriptions, lifecycle, snapshots, listing,
# validation, raw.
class EventStoreConformance(
    RawPayloadConformance,
    ValidationConformance,
    ListingConformance,
    SnapshotConformance,
    LifecycleConformance,
    SubscriptionConformance,
    ReadConformance,
    MultiAppendConformance,
    AppendConformance,
):
    """The event store contract as tests; subclass it once per backend.

    Every test gets a fresh store from ``make_store``; tests that need options (a clock,
    a size limit) open their own. Test names say the scenario, area first: expected_version,
    concurrent, idempotent, append, append_many, read_stream, read_all, subscribe, delete,
    tombstone, metadata, lifecycle, snapshot, list_streams, invalid, hostile.
    """
