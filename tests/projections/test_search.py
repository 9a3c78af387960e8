"""``SearchIndex``: fields and weights, ranked search with snippets and filters, documents
replaced and deleted, rebuilds, on SQLite FTS5 and PostgreSQL full text alike."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import pytest

from eskit.projections import (
    Database,
    PostgresDatabase,
    ProjectionRunner,
    ReadModelConnection,
    SQLiteDatabase,
    handles,
)
from eskit.projections.search import Field, SearchIndex
from eskit.store.memory import MemoryStore
from eskit.store.model import NewEvent, RecordedEvent
from eskit.testing import ProjectionSpec
from tests import postgres, services

pytestmark = pytest.mark.anyio


class Notes(SearchIndex):
    """Notes by their id: a heavy title, a light body, an author, a topic to filter on."""

    name = "notes"
    fields = (
        Field("title", weight=4),
        Field("body", weight=1),
        Field("author", weight=2, personal=True),
        Field("topic", weight=None),
    )

    @handles("NoteWritten")
    def written(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        data = {k: str(v) for k, v in event.data.items()}
        subject = data.pop("author_id")
        self.put(db, data.pop("id"), subject=subject, **data)

    @handles("NoteRetitled")
    def retitled(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.update(db, str(event.data["id"]), title=str(event.data["title"]))

    @handles("NoteDeleted")
    def deleted(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.delete(db, str(event.data["id"]))


def note(key: str, title: str, body: str, topic: str = "misc", author: str = "Ada") -> NewEvent:
    data = {"id": key, "title": title, "body": body, "topic": topic}
    return NewEvent("NoteWritten", {**data, "author": author, "author_id": author.lower()})


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened: Database = SQLiteDatabase(tmp_path / "read.db")
    else:
        opened = PostgresDatabase(url=postgres.database_url(), schema=services.unique("search"))
    yield opened
    await opened.close()


def keys(text: str, **options: object) -> Callable[[Database], Awaitable[list[str]]]:
    async def query(database: Database) -> list[str]:
        return [hit.key for hit in await Notes.search(database, text, **options)]  # type: ignore[arg-type]

    return query


async def test_a_match_in_a_heavier_field_ranks_first(database: Database) -> None:
    async with ProjectionSpec(Notes(), database) as spec:
        spec.given("n", note("body", "Weaving", "the engine weaves"))
        spec.given("n", note("title", "The engine", "weaves patterns"))

        await spec.then_answer(keys("engine"), ["title", "body"])
        await spec.then_answer(keys("engine weaves"), ["title", "body"])
        await spec.then_answer(keys("engine", limit=1), ["title"])


async def test_filters_on_any_field_with_or_without_words(database: Database) -> None:
    async with ProjectionSpec(Notes(), database) as spec:
        spec.given("n", note("a", "Engines", "steam", topic="math"), note("b", "Engines", "gas"))
        spec.given("n", note("c", "Looms", "math", topic="math"))

        await spec.then_answer(keys("engines", where={"topic": "math"}), ["a"])
        await spec.then_answer(keys("", where={"topic": "math"}), ["a", "c"])
        await spec.then_answer(keys("math"), ["c"])  # topic is stored, not searched
        await spec.then_answer(keys(""), [])
        await spec.then_answer(keys("\x00 "), [])  # NUL separates words: nothing to find
        await spec.then_answer(keys("math\x00engines"), [])
        await spec.then_answer(keys("steam\x00engines"), ["a"])
        with pytest.raises(ValueError, match="no field colour"):
            await Notes.search(database, "x", where={"colour": "red"})


async def test_a_hit_carries_fields_a_snippet_and_a_score(database: Database) -> None:
    async with ProjectionSpec(Notes(), database) as spec:
        spec.given("n", note("a", "Notes", "a machine that weaves algebraic patterns"))
        await spec.then_answer(keys("algebraic"), ["a"])

        (hit,) = await Notes.search(database, "ALGEBRAIC", highlight=("<b>", "</b>"))

        assert hit.fields == {
            "title": "Notes",
            "body": "a machine that weaves algebraic patterns",
            "author": "Ada",
            "topic": "misc",
        }
        assert "weaves <b>algebraic</b> patterns" in hit.snippet
        assert hit.score > 0


async def test_documents_are_replaced_updated_and_deleted(database: Database) -> None:
    async with ProjectionSpec(Notes(), database) as spec:
        spec.given("n", note("a", "Old title", "body"), note("b", "Other", "body"))
        spec.given("n", NewEvent("NoteRetitled", {"id": "a", "title": "New title"}))
        spec.given("n", note("b", "Rewritten", "text"), NewEvent("NoteDeleted", {"id": "x"}))

        await spec.then_answer(keys("old"), [])
        await spec.then_answer(keys("new"), ["a"])
        await spec.then_answer(keys("other"), [])  # put replaces the whole document
        await spec.then_answer(keys("body"), ["a"])
        await spec.then_rows(
            "notes_docs", {"key": "a", "subject": "ada"}, {"key": "b", "subject": "ada"}
        )

        spec.given("n", NewEvent("NoteDeleted", {"id": "a"}))

        await spec.then_answer(keys("new"), [])
        await spec.then_rows("notes_docs", {"key": "b", "subject": "ada"})


async def test_a_rebuild_answers_as_the_build_before(database: Database) -> None:
    store = MemoryStore()
    await store.open()
    await store.append("n", [note(str(i), f"title {i}", f"body {i % 3}") for i in range(30)])
    async with ProjectionRunner(store, [Notes()], database=database) as runner:
        await runner.run_until_caught_up()
        before = await Notes.search(database, "body 1", limit=50)

        await runner.rebuild("notes")

        assert await Notes.search(database, "body 1", limit=50) == before
        assert len(before) == 10
    await store.close()


class Watched(Notes):
    """Notes that note whether SQLite overwrites deleted content while they write."""

    secure: ClassVar[list[int]] = []

    @handles("NoteRetitled")
    def retitled(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.secure.append(db.conn.execute("PRAGMA secure_delete").fetchone()[0])
        super().retitled(event, db)


async def test_sqlite_secure_delete_is_on_while_the_index_writes(tmp_path: Path) -> None:
    """Some builds default to it (Debian's), others not: the index turns it on for its
    batches and restores the connection's own setting after them."""
    database = SQLiteDatabase(tmp_path / "read.db")
    await database.write(lambda c: c.execute("PRAGMA secure_delete = 0"))
    async with ProjectionSpec(Watched(), database) as spec:
        spec.given("n", note("a", "Old title", "body"))
        spec.given("n", NewEvent("NoteRetitled", {"id": "a", "title": "New title"}))
        await spec.then_answer(keys("new"), ["a"])

        assert Watched.secure == [1]
        assert await database.read(lambda c: c.execute("PRAGMA secure_delete").fetchone()) == (0,)
    await database.close()


class Stemmed(Notes):
    """The same notes, their words stemmed by PostgreSQL's ``english`` configuration."""

    name = "stemmed_notes"
    language = "english"


async def test_postgresql_stems_words_in_the_language_given() -> None:
    database = PostgresDatabase(url=postgres.database_url(), schema=services.unique("stem"))
    async with ProjectionSpec(Stemmed(), database) as spec:
        spec.given("n", note("a", "Invoices", "the engines weaving"))

        async def stemmed(database: Database) -> list[str]:
            return [hit.key for hit in await Stemmed.search(database, "invoice engine weaves")]

        await spec.then_answer(stemmed, ["a"])
    await database.close()


def test_fields_are_checked_when_the_class_is_declared() -> None:
    cases: list[tuple[tuple[Field, ...], str]] = [
        ((), "needs `fields`"),
        ((Field("a", weight=None),), "at least one field with a weight"),
        ((Field("a"), Field("a")), "named twice"),
        (tuple(Field(n, weight=w) for n, w in zip("abcde", range(1, 6), strict=True)), "four"),
    ]
    for fields, says in cases:
        with pytest.raises(ValueError, match=says):
            type("Bad", (SearchIndex,), {"name": "bad", "fields": fields})
    with pytest.raises(ValueError, match="reserved"):
        Field("key")
    with pytest.raises(ValueError, match="must be > 0"):
        Field("a", weight=0)
    with pytest.raises(ValueError, match="invalid search field name"):
        Field('a"; DROP')


def test_the_schema_differs_by_database_only() -> None:
    sqlite, postgresql = Notes().statements(True), Notes().statements(False)
    assert "fts5(key UNINDEXED" in sqlite[0]
    assert '"topic" UNINDEXED' in sqlite[0]
    assert "tsvector GENERATED ALWAYS" in postgresql[0]
    assert "GIN" in postgresql[1]
    assert Notes.tables == ("notes", "notes_docs")
    sqlite3.connect(":memory:").execute(sqlite[0].format(notes="t"))  # valid SQL
