"""The HTTP API under test: an app over a real store, a client that calls it in-process,
and one token per kind of grant."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

import eskit
from eskit.web.tokens import TokenFile

SCOPES: dict[str, list[str]] = {
    "admin": ["admin"],
    "reader": ["read"],
    "writer": ["write"],
    "invoice_reader": ["read:invoice"],
    "invoice_writer": ["write:invoice"],
}
"""The tokens every test may use, by name."""
DUE = dt.date(2024, 5, 31)


def token_file(directory: Path) -> tuple[TokenFile, dict[str, str]]:
    """A token file with one token per entry of ``SCOPES``, and the tokens by name."""
    tokens = TokenFile(directory / "tokens.json")
    return tokens, {name: tokens.create(name, scopes) for name, scopes in SCOPES.items()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client(app: FastAPI) -> httpx.AsyncClient:
    """A client calling ``app`` in-process (its lifespan is the caller's to run)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@dataclasses.dataclass
class Api:
    """An app, its store, a client and the tokens, with shortcuts for the common calls."""

    app: FastAPI
    store: eskit.EventStore
    http: httpx.AsyncClient
    tokens: dict[str, str]

    def as_(self, name: str, **headers: str) -> dict[str, str]:
        """Headers authenticating as the token ``name``, plus ``headers``."""
        return {**bearer(self.tokens[name]), **headers}

    async def command(
        self, name: str, body: dict[str, Any], token: str = "admin", **headers: str
    ) -> httpx.Response:
        return await self.http.post(
            f"/commands/{name}", json=body, headers=self.as_(token, **headers)
        )

    async def create_invoice(
        self, invoice: str, token: str = "admin", due: dt.date = DUE
    ) -> httpx.Response:
        body = {"invoice_id": invoice, "customer_id": "c-1", "currency": "EUR", "due_date": due}
        return await self.command("CreateInvoice", _json(body), token)

    async def append(
        self, stream: str, *types: str, token: str = "admin", **headers: str
    ) -> httpx.Response:
        events = [{"type": t, "data": {"n": i}} for i, t in enumerate(types)]
        return await self.http.post(
            f"/streams/{stream}", json={"events": events}, headers=self.as_(token, **headers)
        )


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in body.items()}


def error(response: httpx.Response) -> dict[str, Any]:
    """The error a response carries, checking it has the API's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"]), body
    detail: dict[str, Any] = body["error"]
    return detail
