"""Fixtures of the CLI tests: a real SQLite store file with a few invoices, and a runner
that invokes the ``eskit`` command wide enough for tables not to wrap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import eskit
from eskit.cli import app


def invoke(args: Sequence[str], input: str | None = None) -> Result:
    """Run ``eskit args`` in this process, as a 200-column terminal would show it."""
    return CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "200"})


async def append(url: str, stream: str, *events: eskit.NewEvent) -> None:
    async with eskit.open_store(url) as store:
        await store.append(stream, list(events))


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A store file with two invoices (5 events), one of them soft-deleted."""
    url = f"sqlite:///{tmp_path}/events.db"

    async def fill() -> None:
        async with eskit.open_store(url) as store:
            await store.append(
                "invoice-1",
                [eskit.NewEvent("InvoiceCreated", {"amount": 120}, {"user": "ann"})],
            )
            await store.append("invoice-2", [eskit.NewEvent("InvoiceCreated", {"amount": 50})])
            await store.append("invoice-1", [eskit.NewEvent("InvoicePaid", {"amount": 20})])
            await store.append("customer-7", [eskit.NewEvent("CustomerRegistered", {})])
            await store.append("invoice-2", [eskit.NewEvent("InvoicePaid", {"amount": 50})])
            await store.delete_stream("invoice-2")

    asyncio.run(fill())
    return url
