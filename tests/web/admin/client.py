"""A client of the admin UI as a browser uses it: log in through the form (the cookie
kept), read pages, post forms with the page's CSRF token."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
from collections.abc import Callable
from typing import Any

import httpx

from eskit.web.tokens import TokenFile
from tests.web.api import DUE, Api

PAGE = {"Accept": "text/html"}
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
TIMEOUT = 10.0


@dataclasses.dataclass
class Admin(Api):
    token_file: TokenFile | None

    async def login(self, name: str = "admin") -> httpx.Response:
        return await self.http.post(
            "/admin/login", data={"token": self.tokens[name], "next": "/admin/streams"}
        )

    async def page(self, path: str, **params: Any) -> str:
        """The HTML of an admin page, which must answer 200."""
        response = await self.http.get(path, params=params or None, headers=PAGE)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/html")
        return response.text

    async def submit(self, page: str, action: str, **fields: str) -> httpx.Response:
        """Post the form of ``page`` (a path) to ``action`` with the CSRF token it holds."""
        found = CSRF.search(await self.page(page))
        assert found is not None, f"no form on {page}"
        return await self.http.post(action, data={"csrf": found[1], **fields})

    async def send(self, name: str, body: dict[str, Any]) -> httpx.Response:
        response = await self.command(name, body)
        assert response.status_code == 200, response.text
        return response

    async def invoice(self, invoice: str, *lines: int) -> None:
        """Create an invoice with ``lines`` (amounts) through the API, as the admin."""
        body = {"invoice_id": invoice, "customer_id": "c-1", "currency": "EUR"}
        await self.send("CreateInvoice", {**body, "due_date": DUE.isoformat()})
        for n, amount in enumerate(lines):
            line = {"invoice_id": invoice, "sku": f"sku-{n}", "amount": amount, "currency": "EUR"}
            await self.send("AddInvoiceLine", line)


def text(page: str) -> str:
    """The page's words with tags removed and entities decoded (what a reader sees), the
    white space between them made one space."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def until(check: Callable[[], Any]) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something truthy."""
    async with asyncio.timeout(TIMEOUT):
        while not (found := await check()):  # noqa: ASYNC110 (pages, not events, to wait on)
            await asyncio.sleep(0.05)
        return found
