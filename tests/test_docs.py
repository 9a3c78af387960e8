"""Every Python block in README.md and docs/*.md runs, so the docs show code that works.

pytest-examples finds the blocks; each page's blocks then run in order in one namespace (a
later block uses the names an earlier one defined), on one event loop (top-level ``await``
works), in a temporary directory of the page's own. The namespace starts with the invoicing
example's names (``examples/invoicing``) and an open SQLite store in that directory, with
its command bus, a projection runner (not started) and a few invoices, which the pages'
fragments take as given. A block that cannot run alone is fenced
``python test="skip" reason="..."``; the reason is required.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import datetime as dt
import inspect
import uuid
from pathlib import Path
from typing import Any

import pytest
from examples.invoicing import app, commands, customer, invoice, read_models
from examples.invoicing.events import events
from pytest_examples import CodeExample, find_examples

import eskit
from eskit.application import CommandBus
from eskit.projections import ProjectionRunner

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK_TIMEOUT = 10.0  # seconds: a block that waits forever fails, not hangs
NOW = dt.datetime(2024, 5, 2, 12, tzinfo=dt.UTC)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def skipped(example: CodeExample) -> bool:
    """Whether the block is fenced ``test="skip"``; such a block must say why."""
    settings = example.prefix_settings()
    if settings.get("test") != "skip":
        return False
    assert settings.get("reason"), f"{page_id(example.path)}:{example.start_line}: no reason"
    return True


async def given(stack: contextlib.AsyncExitStack) -> dict[str, Any]:
    """The names the pages' fragments take as given: the invoicing example, opened."""
    namespace: dict[str, Any] = {"__name__": "docs", "dt": dt, "eskit": eskit}
    for module in (commands, customer, invoice, read_models):
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    store = await stack.enter_async_context(eskit.open_store("sqlite:///./given.db"))
    bus = app.invoicing(store)
    runner = ProjectionRunner(store, read_models.projections(store, bus))  # not started
    namespace.update(store=store, events=events, bus=bus, handle_invoice=app.handle_invoice)
    namespace.update(runner=runner)
    namespace.update(now=NOW, later=NOW + dt.timedelta(days=1), due=NOW.date())
    namespace.update(request_id=uuid.uuid4(), transfer_id=uuid.uuid4(), line_id=uuid.uuid4())
    await invoices(bus)
    return namespace


async def invoices(bus: CommandBus) -> None:
    """The invoices the pages use: inv-1 issued (total 3250, to pay), inv-2 a draft, and
    invoice-42 at version 3."""
    for invoice_id in ("inv-1", "inv-2"):
        await bus.send(commands.CreateInvoice(invoice_id, "c-1", "EUR", NOW.date()))
    await bus.send(commands.AddInvoiceLine("inv-1", "book", 3000, "EUR"))
    await bus.send(commands.AddInvoiceLine("inv-1", "pen", 250, "EUR"))
    await bus.send(commands.IssueInvoice("inv-1", NOW))
    await bus.store.append(  # docs/event-store.md appends to invoice-42 at version 3
        "invoice-42",
        [eskit.NewEvent("InvoiceNoted", {"note": str(n)}) for n in range(4)],
        expected_version=eskit.NO_STREAM,
    )


def give_back(given_names: dict[str, Any], example: CodeExample, namespace: dict[str, Any]) -> None:
    """A block's own ``async with ... as store`` ends with the block: later blocks get the
    page's open store back."""
    if "as store" in example.source:
        namespace["store"] = given_names["store"]


def run_block(example: CodeExample, namespace: dict[str, Any], loop: asyncio.Runner) -> None:
    """Run one block on the page's event loop, as code in an async app runs: top-level
    ``await`` works, and so does code that starts tasks."""
    where = f"{page_id(example.path)}:{example.start_line + 1}"
    code = compile(
        example.source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )

    async def block() -> None:
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result

    loop.run(asyncio.wait_for(block(), BLOCK_TIMEOUT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    examples = list(find_examples(page))
    runnable = [example for example in examples if not skipped(example)]
    with asyncio.Runner() as loop:
        stack = contextlib.AsyncExitStack()
        namespace = loop.run(given(stack))
        given_names = dict(namespace)
        try:
            for example in runnable:
                run_block(example, namespace, loop)
                give_back(given_names, example, namespace)
        finally:
            loop.run(stack.aclose())
