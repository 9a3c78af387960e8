"""The live feed (Server-Sent Events) through a real uvicorn server on a free port, read
with httpx: resuming from ``Last-Event-ID``, heartbeats, and the feed ending when the
client goes away or the server shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import eskit
from eskit.web import Settings, create_app, server_for
from eskit.web.live import TASK
from eskit.web.server import Server
from eskit.web.tokens import TokenSet
from tests.web.api import bearer, token_file

pytestmark = pytest.mark.anyio
TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def serving(
    store: eskit.EventStore, tokens: TokenSet | None = None, **settings: Any
) -> AsyncIterator[tuple[str, Server]]:
    """The API over ``store`` served by uvicorn on a free port of this machine."""
    app = create_app(store, tokens=tokens, settings=Settings(**settings))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = server_for(app, "127.0.0.1", port, log_level="warning")
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await until(lambda: server.started)
        try:
            yield f"http://127.0.0.1:{port}", server
        finally:
            server.should_exit = True
            async with asyncio.timeout(TIMEOUT):
                await task


async def until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not done():  # noqa: ASYNC110 (uvicorn's flags and the loop's tasks: no event)
            await asyncio.sleep(0.01)


class Feed:
    """A client's view of one live feed: events (position, type) and comments as read."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def events(self, count: int) -> list[tuple[int, str]]:
        """The next ``count`` events."""
        found: list[tuple[int, str]] = []
        async with asyncio.timeout(TIMEOUT):
            while len(found) < count:
                found.append(await self.next_event())
        return found

    async def next_event(self) -> tuple[int, str]:
        position = None
        async for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("id: "):
                position = int(line[4:])
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["position"] == position
                return event["position"], event["type"]
        raise EOFError("the feed ended")

    async def comment(self) -> str:
        async with asyncio.timeout(TIMEOUT):
            async for line in self.lines:
                if line.startswith(":"):
                    return line
        raise EOFError("the feed ended")


@contextlib.asynccontextmanager
async def follow(
    url: str, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[Feed]:
    async with (
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http,
        http.stream("GET", "/events/live", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Feed(response)


async def append(store: eskit.EventStore, stream: str, *types: str) -> None:
    await store.append(stream, [eskit.NewEvent(t, {}) for t in types])


def feed_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK)]


async def test_a_reconnecting_client_resumes_after_its_last_event_id(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    tokens, issued = token_file(tmp_path)
    reader = bearer(issued["reader"])
    await append(store, "invoice-1", "Created", "Issued")
    await append(store, "customer-1", "Registered")
    async with serving(store, tokens.current()) as (url, _):
        async with follow(url, reader) as feed:
            assert await feed.events(3) == [(1, "Created"), (2, "Issued"), (3, "Registered")]
            await append(store, "invoice-1", "Paid")  # arrives live
            assert await feed.events(1) == [(4, "Paid")]
        await append(store, "invoice-2", "Created", "Cancelled")
        async with follow(url, {**reader, "Last-Event-ID": "4"}) as feed:
            assert await feed.events(2) == [(5, "Created"), (6, "Cancelled")]
        async with follow(url, {**reader, "Last-Event-ID": "2"}, after=5) as feed:
            assert (await feed.events(1))[0][0] == 3  # the header wins over `after`
        async with follow(url, reader, after=1, category="invoice", types="Paid") as feed:
            assert await feed.events(1) == [(4, "Paid")]


async def test_a_quiet_feed_sends_heartbeats(store: eskit.EventStore) -> None:
    async with serving(store, heartbeat=0.05) as (url, _), follow(url) as feed:
        assert (await feed.comment()).startswith(": following the log after position 0")
        assert await feed.comment() == ": heartbeat"
        await append(store, "invoice-1", "Created")
        assert await feed.events(1) == [(1, "Created")]


async def test_the_feed_ends_when_the_client_goes_away(store: eskit.EventStore) -> None:
    async with serving(store) as (url, _):
        async with follow(url) as feed:
            await append(store, "invoice-1", "Created")
            await feed.events(1)
            assert len(feed_tasks()) == 1
        await until(lambda: not feed_tasks())


async def test_the_feed_ends_when_the_server_shuts_down(store: eskit.EventStore) -> None:
    async with serving(store) as (url, server), follow(url) as feed:
        await append(store, "invoice-1", "Created")
        await feed.events(1)
        server.should_exit = True
        with pytest.raises(EOFError):
            await feed.events(1)
    assert feed_tasks() == []


async def test_bad_feed_parameters_are_refused_before_the_feed_starts(
    store: eskit.EventStore,
) -> None:
    async with serving(store) as (url, _), httpx.AsyncClient(base_url=url) as http:
        for value in ("x", "-1", "1.5"):
            response = await http.get("/events/live", headers={"Last-Event-ID": value})
            assert response.status_code == 400
            assert response.json()["error"]["message"].startswith("Last-Event-ID must be")
        reserved = await http.get("/events/live", params={"category": "$system"})
        assert reserved.status_code == 422
        assert "reserved" in reserved.json()["error"]["message"]
