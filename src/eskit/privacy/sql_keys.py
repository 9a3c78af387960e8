"""The SQL both key-store backends share: a table of wrapped keys, one of subjects forgotten.

    key_id         random id, stored in every ciphertext the key encrypted
    subject        the data subject's id (unique: one key per subject)
    wrapped        the key encrypted by a master key (nonce + AES-GCM ciphertext)
    master_key_id  the fingerprint of the master key that wrapped it
    created_at     ISO 8601 UTC

and ``eskit_forgotten_subjects`` (subject, forgotten_at): the subjects whose keys ``forget``
deleted, so that forgetting one again is told apart from a subject that never was.

Each backend (``sqlite_keys``, ``postgres_keys``) supplies the connection and how to run a
transaction on it; the statements are written once, here.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from eskit.privacy.keystore import StoredKey
from eskit.store.base import utc_now

T = TypeVar("T")

_COLUMNS = "key_id, subject, wrapped, master_key_id, created_at"


class Connection(Protocol):
    """What both ``sqlite3.Connection`` and ``psycopg.Connection`` offer."""

    def execute(self, query: Any, params: Any = ...) -> Any: ...


class SQLKeyStore(abc.ABC):
    """A key store in one SQL table; backends run the statements in their transactions."""

    table: str
    """The keys table's (qualified) name."""
    forgotten_table: str
    """The (qualified) name of the table of subjects forgotten."""
    placeholder: str = "?"

    @abc.abstractmethod
    def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``work`` under the store's lock; with ``write``, in a transaction that
        commits if it returns."""

    def _sql(self, statement: str) -> str:
        return statement.format(table=self.table, forgotten=self.forgotten_table).replace(
            "?", self.placeholder
        )

    def get(self, key_id: str) -> StoredKey | None:
        sql = self._sql(f"SELECT {_COLUMNS} FROM {{table}} WHERE key_id = ?")
        return self._run(lambda conn: _key(conn.execute(sql, (key_id,)).fetchone()))

    def current(self, subject: str) -> StoredKey | None:
        sql = self._sql(f"SELECT {_COLUMNS} FROM {{table}} WHERE subject = ?")
        return self._run(lambda conn: _key(conn.execute(sql, (subject,)).fetchone()))

    def add(self, key: StoredKey) -> StoredKey:
        insert = self._sql(
            f"INSERT INTO {{table}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        select = self._sql(f"SELECT {_COLUMNS} FROM {{table}} WHERE subject = ?")

        def add(conn: Connection) -> StoredKey:
            conn.execute(insert, _row(key))
            stored = _key(conn.execute(select, (key.subject,)).fetchone())
            if stored is None:  # the id clashed with another subject's: astronomically rare
                raise ValueError(f"key id {key.key_id} is taken; try again")
            return stored

        return self._run(add, write=True)

    def forget(self, subject: str) -> list[str]:
        delete = self._sql("DELETE FROM {table} WHERE subject = ? RETURNING key_id")
        remember = self._sql(
            "INSERT INTO {forgotten} (subject, forgotten_at) VALUES (?, ?)"
            " ON CONFLICT (subject) DO UPDATE SET forgotten_at = excluded.forgotten_at"
        )

        def forget(conn: Connection) -> list[str]:
            gone = [r[0] for r in conn.execute(delete, (subject,)).fetchall()]
            if gone:
                conn.execute(remember, (subject, utc_now().isoformat()))
            return gone

        return self._run(forget, write=True)

    def forgotten(self, subject: str) -> bool:
        sql = self._sql("SELECT 1 FROM {forgotten} WHERE subject = ?")
        return self._run(lambda conn: conn.execute(sql, (subject,)).fetchone() is not None)

    def wrapped_by_others(self, master_key_id: str, limit: int) -> list[StoredKey]:
        sql = self._sql(
            f"SELECT {_COLUMNS} FROM {{table}} WHERE master_key_id <> ? ORDER BY key_id LIMIT ?"
        )
        return self._run(
            lambda conn: [_stored(r) for r in conn.execute(sql, (master_key_id, limit)).fetchall()]
        )

    def rewrap(self, changes: Sequence[tuple[str, StoredKey]]) -> int:
        sql = self._sql(
            "UPDATE {table} SET wrapped = ?, master_key_id = ? WHERE key_id = ?"
            " AND master_key_id = ?"
        )

        def rewrap(conn: Connection) -> int:
            changed = 0
            for old_master, key in changes:
                cursor = conn.execute(sql, (key.wrapped, key.master_key_id, key.key_id, old_master))
                changed += cursor.rowcount
            return changed

        return self._run(rewrap, write=True)

    def count_by_master(self) -> dict[str, int]:
        sql = self._sql("SELECT master_key_id, count(*) FROM {table} GROUP BY master_key_id")
        return self._run(lambda conn: {r[0]: r[1] for r in conn.execute(sql).fetchall()})


def _row(key: StoredKey) -> tuple[str, str, bytes, str, str]:
    return (key.key_id, key.subject, key.wrapped, key.master_key_id, key.created_at.isoformat())


def _key(row: Sequence[Any] | None) -> StoredKey | None:
    return None if row is None else _stored(row)


def _stored(row: Sequence[Any]) -> StoredKey:
    key_id, subject, wrapped, master_key_id, created_at = row
    return StoredKey(
        key_id, subject, bytes(wrapped), master_key_id, dt.datetime.fromisoformat(created_at)
    )
