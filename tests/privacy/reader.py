"""A second process holding a read transaction open on a SQLite key store: what keeps
``forget`` from emptying the write-ahead log."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM eskit_subject_keys").fetchone()
print("holding", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
conn.close()
"""


@contextlib.contextmanager
def reader_holding(path: Path) -> Iterator[None]:
    """For the block, another process reads ``path`` in one open transaction."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "holding"
        yield
    finally:
        process.stdin.close()  # its readline returns: it commits and exits
        process.wait(10)
