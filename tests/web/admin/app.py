"""The application the admin UI tests serve (``--app tests.web.admin.app:app_spec``): the
invoicing example, plus a projection that gets stuck on ``Poison`` events, run by a runner
of its own as another process would (the dashboard shows it from the stored state). The
``lab`` and ``note`` streams take free-form events. ``served`` serves an application
in-process."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from examples.invoicing.web import app_spec as invoicing_spec

import eskit
from eskit.domain import EventRegistry
from eskit.projections import ProjectionRunner
from eskit.store import EventStore
from eskit.web import AppSpec, serving_app
from tests.cli.apps import Fragile
from tests.web.admin.client import Admin
from tests.web.api import client, token_file


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


@contextlib.asynccontextmanager
async def served(
    directory: Path, spec: Callable[[EventStore], AppSpec] = app_spec, *, tokens: bool = True
) -> AsyncIterator[Admin]:
    """``spec`` served in-process as ``eskit serve`` builds it (the store, a SQLite file in
    ``directory``, opened by the lifespan, runners started), with the tests' tokens or
    (``tokens=False``) open."""
    store = eskit.open_store(f"sqlite:///{directory}/events.db")
    file, issued = token_file(directory) if tokens else (None, {})
    app = serving_app(store, spec(store), tokens=file)
    async with app.router.lifespan_context(app), client(app) as http:
        yield Admin(app, store, http, issued, file)


def bus_only(events: EventRegistry) -> Callable[[EventStore], AppSpec]:
    """An application with nothing but a command bus over ``events``."""
    return lambda store: AppSpec(bus=eskit.CommandBus(store, events))
