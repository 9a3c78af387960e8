"""The application ``eskit grpc --app`` loads in the tests: the invoicing example, with
``lab`` streams free-form."""

from __future__ import annotations

import dataclasses

from examples.invoicing.web import app_spec

from eskit.store import EventStore
from eskit.web import AppSpec


def invoicing_with_lab(store: EventStore) -> AppSpec:
    return dataclasses.replace(app_spec(store), free_form_categories={"lab"})
