"""The application the admin UI tests serve (``--app tests.web.admin.app:app_spec``): the
invoicing example, plus a projection that gets stuck on ``Poison`` events, run by a runner
of its own as another process would (the dashboard shows it from the stored state). The
``lab`` and ``note`` streams take free-form events."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from examples.invoicing.web import app_spec as invoicing_spec

from eskit.projections import ProjectionRunner
from eskit.store import EventStore
from eskit.web import AppSpec
from tests.cli.apps import Fragile


def app_spec(store: EventStore) -> AppSpec:
    spec = invoicing_spec(store)
    assert spec.running is not None
    invoicing = spec.running
    fragile = ProjectionRunner(store, [Fragile()], retries=0, backoff=0.01, stuck_poll=0.1)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with invoicing(), fragile:
            yield

    # The tests post Poison events and notes of no registered type to these categories.
    return dataclasses.replace(spec, running=running, free_form_categories={"lab", "note"})
