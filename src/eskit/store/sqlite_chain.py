"""The SQLite store's head, and its chain start record (``chain.ChainStart``): the first
position whose event must carry a link in the current format, keyed with the audit key.

It is written once, by migration 003 (``sqlite_schema``): position 1 in a new file, the next
position in a file upgraded from a release without it (its older events keep their older
links). A record that is missing later was removed; eskit never writes it again.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from eskit.store.chain import ChainStart, chain_start_hash

HEAD: Final = (
    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
    " coalesce((SELECT max(position) FROM events), 0))"
)


def head(conn: sqlite3.Connection) -> int:
    """The last position ever given (AUTOINCREMENT's counter): the next event's is one more,
    even if the newest events were purged. Read under the write lock, it cannot move."""
    position: int = conn.execute(HEAD).fetchone()[0]
    return position


def record_chain_start(conn: sqlite3.Connection, key: bytes | None) -> None:
    """Record that the chain starts at the next position (inside the migration's write
    transaction: no event can slip in)."""
    position = head(conn) + 1
    conn.execute(
        "INSERT INTO chain_start (id, position, hash) VALUES (1, ?, ?)",
        (position, chain_start_hash(position, key)),
    )


def read_chain_start(conn: sqlite3.Connection) -> ChainStart | None:
    """The record, or None if it was removed."""
    try:
        row = conn.execute("SELECT position, hash FROM chain_start").fetchone()
    except sqlite3.OperationalError:  # the table was dropped
        return None
    return None if row is None else ChainStart(*row)
