"""schemathesis against the OpenAPI document of the invoicing example's API: whatever it
sends, the API answers without a 5xx, with a documented status and content type, and with
a body that matches the documented schema.

The app is built at import, as schemathesis's pytest plugin wants it (its lazy
``from_fixture`` loader does not run on this pytest): a store in a temporary directory,
opened by the app's lifespan on schemathesis's own event loop and closed after each test.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from examples.invoicing.web import app_spec
from hypothesis import HealthCheck, settings
from schemathesis import Case, checks

import eskit
from eskit.web import serving_app
from tests.web.api import bearer, token_file

EXAMPLES = 15
"""Examples per operation: enough to reach every parameter and body, bounded for speed."""

DIRECTORY = Path(tempfile.mkdtemp(prefix="eskit-schemathesis-"))
atexit.register(shutil.rmtree, DIRECTORY, ignore_errors=True)
TOKENS, ISSUED = token_file(DIRECTORY)
STORE = eskit.open_store(f"sqlite:///{DIRECTORY}/events.db")
APP = serving_app(STORE, app_spec(STORE), tokens=TOKENS)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/events/live")
"""Every operation but the live feed, which never ends (tested in test_live)."""


@schema.auth()
class AdminToken:
    """The admin token on every request, set as schemathesis's own auth: a header added
    behind its back would turn its "Authorization left out" negative cases into valid ones,
    which the API then rightly accepts."""

    def get(self, case: Case[Any], ctx: Any) -> str:
        return ISSUED["admin"]

    def set(self, case: Case[Any], data: str, ctx: Any) -> None:
        case.headers.update(bearer(data))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_fails_and_keeps_to_its_schema(case: Case[Any]) -> None:
    # Every default check but one: a schema cannot say all that the store and the domain
    # refuse (control characters in a stream name, an unknown currency), so a request
    # valid by the schema may rightly get a 4xx.
    case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])
