"""The raw ``sqlite3`` side's writes: every row lands, in order, however the transactions
split into multi-row INSERTs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from benchmarks import raw
from benchmarks.common import payloads, placements, raw_rows


@pytest.mark.parametrize(
    ("count", "rows_in_chunks"),
    [(1, [1]), (3, [2, 1]), (64, [64]), (100, [64, 32, 4]), (130, [64, 64, 2])],
)
def test_chunked_takes_the_largest_chunks_and_keeps_every_parameter(
    count: int, rows_in_chunks: list[int]
) -> None:
    parameters: list[object] = list(range(count * 7))
    statements = raw.chunked(parameters, count)
    assert [statement.count("(?") for statement, _ in statements] == rows_in_chunks
    assert [len(bound) for _, bound in statements] == [7 * n for n in rows_in_chunks]
    assert [p for _, bound in statements for p in bound] == parameters
    assert statements[0][0] == raw.INSERTS[rows_in_chunks[0]]


@pytest.mark.parametrize(("count", "per_tx"), [(7, 1), (5, 3), (300, 100), (130, 130)])
def test_write_inserts_every_row_in_order(tmp_path: Path, count: int, per_tx: int) -> None:
    items = payloads(count)
    assert raw.write(tmp_path, items, per_stream=1, per_tx=per_tx).count == count
    conn = sqlite3.connect(tmp_path / "raw.db")
    try:
        written = conn.execute(
            "SELECT stream, version, type, data, metadata FROM events WHERE position > ?"
            " ORDER BY position",
            (raw.WARM_UP,),
        ).fetchall()
    finally:
        conn.close()
    expected = raw_rows(placements(count, 1), items)
    assert written == [(s, v, t, d, m) for _, s, v, t, d, m, _ in expected]
