"""Appends through a PostgreSQL engine, blocking, with no event loop; driven by
tests/store/test_postgres_engine.py.

Run by path: ``python postgres_engine_child.py URL WRITER COUNT``. Opens the engine, prints
``ready``, waits for a line on stdin (so that every process starts at once), appends COUNT
one-event appends to its own stream ``proc-WRITER``, each expecting the version before,
and prints one JSON line: the positions it was answered and how many groups it wrote in
one statement with the head locked first (the contended path).
"""

from __future__ import annotations

import json
import sys

import eskit
from eskit.store import rules
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_writer import Writer


class Counting(Writer):
    locked = 0

    def _one_statement(self, conn, batch, expected, head, locked=False):  # type: ignore[no-untyped-def]
        outcomes = super()._one_statement(conn, batch, expected, head, locked)
        if locked and outcomes is not None:
            type(self).locked += 1
        return outcomes


def main(url: str, writer: int, count: int) -> None:
    store = eskit.open_store(url)
    assert isinstance(store, PostgresStore)
    engine = store.engine
    engine.open()
    try:
        assert engine._writer is not None
        engine._writer.__class__ = Counting
        print("ready", flush=True)
        sys.stdin.readline()
        positions = []
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        for n in range(count):
            append = rules.prepare_append(
                f"proc-{writer}", [eskit.NewEvent("Counted", {"n": n})], expected, 1 << 20
            )
            (result,) = engine.append_many([append])
            positions.append(result.last_position)
            expected = result.last_version
        print(json.dumps({"positions": positions, "locked": Counting.locked}), flush=True)
    finally:
        engine.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
