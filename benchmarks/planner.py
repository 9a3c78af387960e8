"""The cost of deciding appends: microseconds per event the planner takes (checks, numbering,
fresh ids and links), beside the link alone, for one-event and 100-event appends. What every
append pays on the writer's thread, IO aside. Run: ``python -m benchmarks.planner``."""

from __future__ import annotations

import argparse
import time

import eskit
from benchmarks.chain import DATA, METADATA, link_cost
from eskit.store import rules
from eskit.store.planner import NEW_STREAM, Planner
from eskit.store.rules import PreparedAppend


def _appends(count: int, size: int) -> list[PreparedAppend]:
    """``count`` appends of ``size`` events, each to its own new stream (NO_STREAM)."""
    return [
        PreparedAppend(
            f"invoice-{n}",
            [rules.PreparedEvent(None, "InvoiceCreated", DATA, METADATA)] * size,
            eskit.NO_STREAM,
        )
        for n in range(count)
    ]


def plan_cost(size: int, events: int) -> float:
    """Microseconds per event to plan appends of ``size`` events, one group per append (as a
    lone caller gets), ``events`` events in all."""
    appends = _appends(max(1, events // size), size)
    started = time.perf_counter()
    for append in appends:
        plan = Planner({append.stream: NEW_STREAM}, {}, 1, 1).plan([append])
        assert plan.error is None
    return (time.perf_counter() - started) / (len(appends) * size) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    events = parser.parse_args().events
    print(f"link alone:                 {link_cost(None, events):.2f} µs/event")
    print(f"plan, 1-event appends:      {plan_cost(1, events):.2f} µs/event")
    print(f"plan, 100-event appends:    {plan_cost(100, events):.2f} µs/event")


if __name__ == "__main__":
    main()
