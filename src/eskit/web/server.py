"""Running the API with uvicorn, so that live feeds end when the server stops.

uvicorn waits for open responses before it shuts the app down, and a live feed never ends
on its own: the server here tells the app first (``begin_shutdown``), so feeds close and
the shutdown completes.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from eskit.web.app import begin_shutdown

GRACE = 10
"""Seconds the server waits for requests in progress before cancelling them."""


class Server(uvicorn.Server):
    """uvicorn's server, ending the app's live feeds when it begins to shut down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin_shutdown(self.app)
        await super().shutdown(sockets)


def server_for(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info"
) -> Server:
    """A server for ``app``; ``await server.serve()`` runs it until SIGINT/SIGTERM or
    ``server.should_exit = True``."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=GRACE,
        server_header=False,
    )
    return Server(config, app)
