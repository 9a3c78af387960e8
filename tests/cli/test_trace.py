"""``eskit trace``: the causal tree of a chain a real command bus wrote."""

from __future__ import annotations

import asyncio

import eskit
from tests.application.test_trace import order_chain
from tests.cli.conftest import invoke


def test_trace_prints_the_tree_of_commands_and_events(url: str) -> None:
    async def chain() -> str:
        async with eskit.open_store(url) as store:
            return await order_chain(store, "1")

    correlation = asyncio.run(chain())
    result = invoke(["trace", url, correlation])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"correlation {correlation} · 3 events"
    labels = [line.rstrip().rsplit("  ", 1)[0] for line in lines[1:]]
    assert labels == [
        "└── PlaceOrder",
        "    └── #6 order-1 v0 OrderPlaced",
        "        └── ReserveStock",
        "            └── #7 stock-sku-7 v0 StockReserved",
        "                └── ConfirmOrder",
        "                    └── #8 order-1 v1 OrderConfirmed",
    ]
    assert f"command {correlation}" in lines[1]
    assert "scanning the log" in result.stderr


def test_trace_of_an_unknown_correlation_id(url: str) -> None:
    result = invoke(["trace", url, "nobody"])
    assert result.exit_code == 1
    assert "error: no events with correlation id 'nobody'" in result.stderr
