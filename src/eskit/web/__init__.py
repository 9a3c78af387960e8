"""The HTTP API (FastAPI): commands, queries, streams, the global log and its live feed,
behind bearer tokens with scopes.

FastAPI and uvicorn are the optional ``eskit[web]`` dependencies: they load when one of
these names is first used, so ``eskit.web.tokens`` (the CLI's) works without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eskit.web.app import create_app
    from eskit.web.context import Settings
    from eskit.web.server import server_for
    from eskit.web.spec import AppSpec, serving_app
    from eskit.web.tokens import Grant, TokenFile, TokenSet

_WHERE = {
    "AppSpec": "eskit.web.spec",
    "Grant": "eskit.web.tokens",
    "Settings": "eskit.web.context",
    "TokenFile": "eskit.web.tokens",
    "TokenSet": "eskit.web.tokens",
    "create_app": "eskit.web.app",
    "server_for": "eskit.web.server",
    "serving_app": "eskit.web.spec",
}

__all__ = [
    "AppSpec",
    "Grant",
    "Settings",
    "TokenFile",
    "TokenSet",
    "create_app",
    "server_for",
    "serving_app",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
