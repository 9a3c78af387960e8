"""Full-text search as a read model: SQLite FTS5 or PostgreSQL full text, one API.

A ``SearchIndex`` is a ``SQLProjection``: the runner keeps it, rebuilds it beside the live
one and switches, like any read model. It declares the document's ``fields`` (each with a
weight, or none for a value that is only stored and filtered on); its ``@handles``
handlers say which events feed a document and map their data onto fields with ``put``,
``update``, ``update_subject`` and ``delete``. ``search`` answers a user's words, best
match first, with a highlighted snippet, optionally filtered by field values.

Each document may name its data subject: when the subject is forgotten (the
``SubjectForgotten`` event ``eskit.privacy.forget`` records) its ``personal`` fields are
replaced by the mask in the index. On SQLite the index is written with ``secure_delete``
and merged after a forget, so the replaced text is overwritten in the file, not only
unlinked.

The tables: ``{name}`` holds the documents (an FTS5 virtual table on SQLite; a table with
a weighted ``tsvector`` column and a GIN index on PostgreSQL) and ``{name}_docs`` maps each
document's key to its row and its subject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from eskit.domain.sensitive import FORGOTTEN
from eskit.projections.database import Database
from eskit.projections.live import live_tables
from eskit.projections.projection import (
    ReadModelConnection,
    SQLProjection,
    check_name,
    handles,
)
from eskit.projections.sql import Connection, is_sqlite
from eskit.store.model import RecordedEvent

_RESERVED = frozenset({"key", "rowid", "rank", "document", "subject", "id"})
_LABELS = "ABCD"


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One field of a document. ``weight``: how much a match in it counts (relative to the
    other fields; at most four different weights), None for a field that is stored and
    filtered on but not searched. ``personal``: the subject's personal data, replaced by
    ``mask`` when the subject is forgotten."""

    name: str
    weight: float | None = 1.0
    personal: bool = False
    mask: str = FORGOTTEN

    def __post_init__(self) -> None:
        check_name(self.name, "search field name")
        if self.name in _RESERVED:
            raise ValueError(f"{self.name!r} is reserved: name the search field otherwise")
        if self.weight is not None and not self.weight > 0:
            raise ValueError(f"field {self.name}: a weight must be > 0 (None: not searched)")


class Hit(msgspec.Struct, frozen=True):
    """One document found: its key, its fields, the best matching passage with the matched
    words between the highlight marks, and its score (higher is better)."""

    key: str
    fields: dict[str, str]
    snippet: str
    score: float


class SearchIndex(SQLProjection):
    """A full-text read model; subclass it with ``name``, ``fields`` and handlers."""

    fields: ClassVar[tuple[Field, ...]] = ()
    language: ClassVar[str] = "simple"
    """PostgreSQL's text search configuration (``simple``: words as written, lower-cased,
    as SQLite's ``unicode61`` tokenizer does; ``english`` stems)."""
    extra_tables: ClassVar[tuple[str, ...]] = ()
    """More tables the handlers need (a lookup of names learnt before the documents)."""
    extra_schema: ClassVar[tuple[str, ...]] = ()
    """Their ``CREATE`` statements, the same on both databases."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "name" in vars(cls):
            check_name(cls.name)
            _check_fields(cls.fields)
            cls.tables = (cls.name, f"{cls.name}_docs", *cls.extra_tables)
            cls.schema = tuple(_sqlite_schema(cls)) + cls.extra_schema
        super().__init_subclass__(**kwargs)

    def statements(self, sqlite: bool) -> Sequence[str]:
        if sqlite:
            return self.schema
        return (*_postgres_schema(type(self)), *self.extra_schema)

    # -- writing, from the handlers ---------------------------------------------------

    @property
    def _index(self) -> str:
        return _placeholder(self.name)

    @property
    def _docs(self) -> str:
        return _placeholder(f"{self.name}_docs")

    def put(
        self, db: ReadModelConnection, key: str, *, subject: str | None = None, **values: str
    ) -> None:
        """Add the document ``key``, or replace it whole (fields not given are empty)."""
        self._check(values)
        (row,) = db.execute(
            f"INSERT INTO {self._docs} (key, subject) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET subject = excluded.subject RETURNING id",
            (key, subject),
        ).fetchone()
        names = [f.name for f in self.fields]
        db.execute(f"DELETE FROM {self._index} WHERE rowid = ?", (row,))
        db.execute(
            f"INSERT INTO {self._index} (rowid, key, {_quoted(names)})"
            f" VALUES (?, ?, {', '.join('?' for _ in names)})",
            (row, key, *(values.get(n, "") for n in names)),
        )

    def update(self, db: ReadModelConnection, key: str, **values: str) -> None:
        """Change some fields of the document ``key`` (nothing if there is none)."""
        self._set(db, values, f"(SELECT id FROM {self._docs} WHERE key = ?)", key)

    def update_subject(self, db: ReadModelConnection, subject: str, **values: str) -> None:
        """Change some fields of every document of ``subject`` (a customer renamed)."""
        self._set(db, values, f"(SELECT id FROM {self._docs} WHERE subject = ?)", subject)

    def delete(self, db: ReadModelConnection, key: str) -> None:
        """Remove the document ``key`` from the index."""
        row = db.execute(f"SELECT id FROM {self._docs} WHERE key = ?", (key,)).fetchone()
        if row is not None:
            db.execute(f"DELETE FROM {self._index} WHERE rowid = ?", (row[0],))
            db.execute(f"DELETE FROM {self._docs} WHERE id = ?", (row[0],))

    def get(self, db: ReadModelConnection, key: str) -> dict[str, str] | None:
        """The fields of the document ``key``, None if there is none."""
        names = [f.name for f in self.fields]
        row = db.execute(
            f"SELECT {_quoted(names)} FROM {self._index}"
            f" WHERE rowid = (SELECT id FROM {self._docs} WHERE key = ?)",
            (key,),
        ).fetchone()
        return None if row is None else dict(zip(names, row, strict=True))

    def _set(self, db: ReadModelConnection, values: Mapping[str, str], rows: str, arg: str) -> None:
        self._check(values)
        if values:
            assignments = ", ".join(f'"{name}" = ?' for name in values)
            db.execute(
                f"UPDATE {self._index} SET {assignments} WHERE rowid IN {rows}",
                (*values.values(), arg),
            )

    def _check(self, values: Mapping[str, str]) -> None:
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"{self.name} has no field {', '.join(sorted(unknown))}")

    # -- forgetting -------------------------------------------------------------------

    @handles("SubjectForgotten")
    def _subject_forgotten(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.forget(db, str(event.data["subject"]))

    def forget(self, db: ReadModelConnection, subject: str) -> None:
        """Mask the personal fields of the subject's documents (extend it to clear what
        ``extra_tables`` hold of the subject; call this one too)."""
        masks = {f.name: f.mask for f in self.fields if f.personal}
        self.update_subject(db, subject, **masks)
        if masks and is_sqlite(db.conn):
            # merge the index's segments: the replaced words leave the old ones
            db.execute(f"INSERT INTO {self._index} ({self._index}) VALUES ('optimize')")

    def handle_batch(self, events: Sequence[RecordedEvent], db: ReadModelConnection) -> None:
        """Apply the batch; on SQLite with ``secure_delete`` on, so that the text a change
        replaces is overwritten in the file rather than left in its free space."""
        if not is_sqlite(db.conn) or not any(f.personal for f in self.fields):
            super().handle_batch(events, db)
            return
        conn = db.conn
        before = conn.execute("PRAGMA secure_delete").fetchone()[0]
        conn.execute("PRAGMA secure_delete = ON")
        try:
            super().handle_batch(events, db)
            db.flush()
        finally:
            conn.execute(f"PRAGMA secure_delete = {int(before)}")

    # -- reading ----------------------------------------------------------------------

    @classmethod
    async def search(
        cls,
        database: Database,
        text: str,
        *,
        where: Mapping[str, str] | None = None,
        limit: int = 10,
        highlight: tuple[str, str] = ("«", "»"),
        words: int = 8,
    ) -> list[Hit]:
        """The documents matching every word of ``text`` (searched as words, never as query
        syntax), best first, and whose fields equal ``where``'s values. ``words``: about
        how long a snippet is. Empty ``text`` lists the filtered documents by key (none
        without a filter)."""
        text = text.replace("\x00", " ")  # no engine takes NUL: it separates words here
        filters = dict(where or {})
        unknown = set(filters) - {f.name for f in cls.fields}
        if unknown:
            raise ValueError(f"{cls.name} has no field {', '.join(sorted(unknown))} to filter on")
        if not text.split() and not filters:
            return []
        if limit < 1 or words < 1:
            raise ValueError("limit and words must be >= 1")

        def run(conn: Connection) -> list[Hit]:
            table = live_tables(conn, cls)[cls.name]
            if is_sqlite(conn):
                query, parameters = _sqlite_query(cls, table, text, filters, highlight, words)
            else:
                query, parameters = _postgres_query(cls, table, text, filters, highlight, words)
            rows = ReadModelConnection(conn).execute(query, (*parameters, limit)).fetchall()
            names = [f.name for f in cls.fields]
            return [
                Hit(row[0], dict(zip(names, row[1:-2], strict=True)), row[-2] or "", float(row[-1]))
                for row in rows
            ]

        return await database.read(run)


def match_expression(text: str) -> str:
    """The user's words as an FTS5 query that cannot be a syntax error: each word becomes a
    quoted string (``"`` doubled inside), so operators and quotes are searched as text and
    the words must all match. Empty if there is nothing to search for. (NUL is the one
    character FTS5 refuses inside a string: it separates words here.)"""
    words = text.replace("\x00", " ").split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _check_fields(fields: Sequence[Field]) -> None:
    if not fields or not all(isinstance(f, Field) for f in fields):
        raise ValueError("a SearchIndex needs `fields`: a tuple of Field")
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"search fields named twice: {names}")
    weights = {f.weight for f in fields if f.weight is not None}
    if not weights:
        raise ValueError("a SearchIndex needs at least one field with a weight")
    if len(weights) > 4:
        raise ValueError("at most four different weights (PostgreSQL has four labels)")


def _placeholder(table: str) -> str:
    """``{table}``: the physical table of the build being written, once formatted."""
    return "{" + table + "}"


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _sqlite_schema(index: type[SearchIndex]) -> list[str]:
    columns = [
        f'"{f.name}"' if f.weight is not None else f'"{f.name}" UNINDEXED' for f in index.fields
    ]
    return [
        f"CREATE VIRTUAL TABLE {_placeholder(index.name)} USING fts5(key UNINDEXED,"
        f" {', '.join(columns)})",
        *_docs_schema(index, "INTEGER PRIMARY KEY"),
    ]


def _docs_schema(index: type[SearchIndex], id_type: str) -> list[str]:
    docs = _placeholder(f"{index.name}_docs")
    return [
        f"CREATE TABLE {docs} (id {id_type}, key TEXT NOT NULL UNIQUE, subject TEXT)",
        f"CREATE INDEX {docs}_by_subject ON {docs} (subject)",
    ]


def _labels(index: type[SearchIndex]) -> dict[float, str]:
    """PostgreSQL's weight label of each weight: the heaviest A, then B, C, D."""
    weights = sorted({f.weight for f in index.fields if f.weight is not None}, reverse=True)
    return {weight: _LABELS[i] for i, weight in enumerate(weights)}


def _postgres_schema(index: type[SearchIndex]) -> list[str]:
    labels = _labels(index)
    language = index.language.replace("'", "''")
    vector = " || ".join(
        f"setweight(to_tsvector('{language}'::regconfig, coalesce(\"{f.name}\", '')),"
        f" '{labels[f.weight]}')"
        for f in index.fields
        if f.weight is not None
    )
    table = _placeholder(index.name)
    texts = ", ".join(f'"{f.name}" TEXT' for f in index.fields)
    return [
        f"CREATE TABLE {table} (rowid BIGINT PRIMARY KEY, key TEXT NOT NULL, {texts},"
        f" document tsvector GENERATED ALWAYS AS ({vector}) STORED)",
        f"CREATE INDEX {table}_document ON {table} USING GIN (document)",
        *_docs_schema(index, "BIGSERIAL PRIMARY KEY"),
    ]


def _filters(filters: Mapping[str, str], prefix: str) -> tuple[str, list[str]]:
    return "".join(f' AND {prefix}"{name}" = ?' for name in filters), list(filters.values())


def _sqlite_query(
    index: type[SearchIndex],
    table: str,
    text: str,
    filters: Mapping[str, str],
    highlight: tuple[str, str],
    words: int,
) -> tuple[str, list[Any]]:
    names = [f.name for f in index.fields]
    conditions, values = _filters(filters, f'"{table}".')
    match = match_expression(text)
    if not match:
        return (
            f"SELECT key, {_quoted(names)}, '', 0.0 FROM \"{table}\""
            f" WHERE 1 = 1{conditions} ORDER BY key LIMIT ?",
            values,
        )
    weights = ", ".join(["0.0", *(str(f.weight or 0.0) for f in index.fields)])
    return (
        f"SELECT key, {_quoted(names)}, snippet(\"{table}\", -1, ?, ?, '…', ?),"
        f' -bm25("{table}", {weights}) AS score FROM "{table}"'
        f' WHERE "{table}" MATCH ?{conditions} ORDER BY score DESC, key LIMIT ?',
        [*highlight, min(words, 64), match, *values],
    )


def _postgres_query(
    index: type[SearchIndex],
    table: str,
    text: str,
    filters: Mapping[str, str],
    highlight: tuple[str, str],
    words: int,
) -> tuple[str, list[Any]]:
    names = [f.name for f in index.fields]
    conditions, values = _filters(filters, "d.")
    if not text.split():
        return (
            f"SELECT key, {_quoted(names)}, '', 0.0 FROM \"{table}\" d"
            f" WHERE true{conditions} ORDER BY key LIMIT ?",
            values,
        )
    labels = _labels(index)
    by_label = {label: weight / max(labels) for weight, label in labels.items()}
    rank = ", ".join(str(by_label.get(label, 0.0)) for label in reversed(_LABELS))
    searched = " || ' … ' || ".join(
        f"coalesce(d.\"{f.name}\", '')" for f in index.fields if f.weight is not None
    )
    start, stop = (mark.replace('"', "") for mark in highlight)
    options = (
        f'StartSel="{start}", StopSel="{stop}", MaxWords={max(words, 2)},'
        f" MinWords={max(1, words // 2)}, ShortWord=0, HighlightAll=false"
    )
    return (
        f"SELECT key, {_quoted(names)}, ts_headline(?::regconfig, {searched}, q, ?),"
        f" ts_rank(ARRAY[{rank}]::float4[], d.document, q) AS score"
        f' FROM "{table}" d, plainto_tsquery(?::regconfig, ?) q'
        f" WHERE d.document @@ q{conditions} ORDER BY score DESC, key LIMIT ?",
        [index.language, options, index.language, text, *values],
    )


__all__ = ["Field", "Hit", "SearchIndex", "match_expression"]
