"""``eskit verify`` against an intruder who changes the stored log behind eskit's back, on
every backend, with and without an audit key and with and without saved anchors.

Each attack below is checked in the four combinations, and each test says what is found
in which. Where an attack is undetectable by design, the test asserts that too: without
the audit key the links are plain BLAKE2b, which whoever can write the database can
recompute after his change (and the chain start record's plain hash with them); only
anchors saved earlier, kept away from the database, then show that something moved.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

import eskit
from eskit.store import chain
from eskit.store.audit import Anchors, AuditReport, load_anchors, verify
from eskit.store.chain import ChainRow, ChainStart
from eskit.store.memory import MemoryStore
from tests import postgres
from tests.store.fixtures.make_fixtures import AUDIT_KEY
from tests.store.tamper import postgres_past_guard, sqlite_past_guard, sqlite_path
from tests.store.test_upgrades import FIXTURES, load_dump

pytestmark = pytest.mark.anyio

KEY = "ab" * 32
RELEASE = "c400693"
"""The release before links covered positions (tests/store/fixtures)."""
EVENTS = 12  # three streams of four events: order-0 at positions 1, 4, 7, 10, ...
Finding = tuple[str, int | None, str]


class Log(abc.ABC):
    """A store's log as an intruder reaches it: rows and the chain start record, changed
    without eskit."""

    @abc.abstractmethod
    def opened(self) -> contextlib.AbstractAsyncContextManager[eskit.EventStore]: ...

    @abc.abstractmethod
    def rows(self) -> list[ChainRow]: ...

    @abc.abstractmethod
    def put(self, rows: Sequence[ChainRow], removed: Sequence[int] = ()) -> None:
        """Store ``rows`` over the rows at their positions (``removed``: positions whose
        row goes first, e.g. when two rows swap positions)."""

    @abc.abstractmethod
    def put_chain_start(self, start: ChainStart) -> None: ...

    def change(self, stream: str, version: int, **fields: Any) -> None:
        (row,) = [r for r in self.rows() if (r.stream, r.version) == (stream, version)]
        self.put([msgspec.structs.replace(row, **fields)])


class MemoryLog(Log):
    def __init__(self) -> None:
        self.store = MemoryStore()

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[eskit.EventStore]:
        await self.store.open()  # once: does nothing when it is open
        yield self.store  # the log lives as long as the store: kept open

    def rows(self) -> list[ChainRow]:
        return list(self.store.engine._chain)

    def put(self, rows: Sequence[ChainRow], removed: Sequence[int] = ()) -> None:
        new = {row.position: row for row in rows}
        kept = [r for r in self.store.engine._chain if r.position not in new]
        self.store.engine._chain = sorted([*kept, *new.values()], key=lambda r: r.position)

    def put_chain_start(self, start: ChainStart) -> None:
        self.store.engine._start = start


class SQLLog(Log):
    """SQLite or PostgreSQL, reached past the guard triggers (``tests/store/tamper.py``), as
    whoever has the file or the tables' owner rights can."""

    events: str
    chain_start: str

    def __init__(self, url: str) -> None:
        self.url = url

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[eskit.EventStore]:
        async with eskit.open_store(self.url) as store:
            yield store

    @abc.abstractmethod
    def connection(self) -> contextlib.AbstractContextManager[Any]: ...

    def sql(self, statement: str) -> str:
        return statement

    def rows(self) -> list[ChainRow]:
        with self.connection() as conn:
            found = conn.execute(
                "SELECT position, stream, category, version, id, type, data, metadata,"
                f" recorded_at, hash, content_type, raw_data, raw_metadata FROM {self.events}"
                " ORDER BY position"
            ).fetchall()
        return [
            ChainRow(position, stream, category, version, _raw_id(id_), *rest)
            for position, stream, category, version, id_, *rest in found
        ]

    def put(self, rows: Sequence[ChainRow], removed: Sequence[int] = ()) -> None:
        with self.connection() as conn:
            for position in removed:
                conn.execute(self.sql(f"DELETE FROM {self.events} WHERE position = ?"), (position,))
            for row in rows:
                conn.execute(
                    self.sql(f"DELETE FROM {self.events} WHERE position = ?"), (row.position,)
                )
                conn.execute(
                    self.sql(
                        f"INSERT INTO {self.events} (position, stream, category, version, id,"
                        " type, data, metadata, recorded_at, hash, content_type, raw_data,"
                        " raw_metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    ),
                    (
                        *msgspec.structs.astuple(row)[:4],
                        self.event_id(row.id),
                        *msgspec.structs.astuple(row)[5:],
                    ),
                )

    def put_chain_start(self, start: ChainStart) -> None:
        with self.connection() as conn:
            conn.execute(
                self.sql(f"UPDATE {self.chain_start} SET position = ?, hash = ?"),
                (start.position, start.hash),
            )

    def event_id(self, raw: bytes) -> Any:
        return raw


def _raw_id(value: Any) -> bytes:
    return value if isinstance(value, bytes) else value.bytes


class SQLiteLog(SQLLog):
    events, chain_start = "events", "chain_start"

    def connection(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return sqlite_past_guard(sqlite_path(self.url))


class PostgresLog(SQLLog):
    events, chain_start = "eskit_events", "eskit_chain_start"

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        return postgres_past_guard(self.url)

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def event_id(self, raw: bytes) -> Any:
        return uuid.UUID(bytes=raw)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path, key: bool) -> Log:
    """A new store (made once the audit key is set or not: a store reads it when made)."""
    if request.param == "memory":
        return MemoryLog()
    if request.param == "sqlite":
        return SQLiteLog(f"sqlite:///{tmp_path}/events.db")
    return PostgresLog(postgres.store_url())


@pytest.fixture(params=[False, True], ids=["no-key", "key"])
def key(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether writers and verify have the audit key (``ESKIT_AUDIT_KEY``)."""
    if request.param:
        monkeypatch.setenv(chain.AUDIT_KEY_ENV, KEY)
    else:
        monkeypatch.delenv(chain.AUDIT_KEY_ENV, raising=False)
    return bool(request.param)


@pytest.fixture(params=[False, True], ids=["no-anchors", "anchors"])
def anchored(request: pytest.FixtureRequest) -> bool:
    """Whether verify gets anchors saved before the intruder came."""
    return bool(request.param)


async def written(log: Log, anchored: bool) -> Anchors | None:
    """Write the story (three streams, four events each); the anchors saved after it."""
    async with log.opened() as store:
        for n in range(4):
            for s in range(3):
                await store.append(f"order-{s}", [eskit.NewEvent("Noted", {"n": n, "s": s})])
        report = await verify(store)
    assert report.ok, report.problems
    return report.anchors() if anchored else None


async def checked(log: Log, anchors: Anchors | None) -> AuditReport:
    async with log.opened() as store:
        return await verify(store, anchors=anchors)


def found(report: AuditReport) -> set[Finding]:
    return {(p.stream, p.version, p.what) for p in report.problems}


def relink_plain(log: Log) -> None:
    """What an intruder without the key does after his change: recompute every link in
    the plain format, and the chain start record's plain hash."""
    links: dict[str, bytes] = {}
    rows = []
    for row in log.rows():
        plain = msgspec.structs.replace(row, hash=None).expected(links.get(row.stream), None)
        links[row.stream] = plain
        rows.append(msgspec.structs.replace(row, hash=plain))
    log.put(rows)
    log.put_chain_start(ChainStart(1, chain.chain_start_hash(1, None)))


ALTERED = "altered: the link does not match the event"
REMOVED = "the link was removed"
ANCHOR = "differs from its anchor"


# -- (v) an untouched store passes ----------------------------------------------------------


async def test_an_untouched_store_passes(log: Log, key: bool, anchored: bool) -> None:
    anchors = await written(log, anchored)
    report = await checked(log, anchors)
    assert report.ok, report.problems
    assert (report.events, report.unlinked) == (EVENTS, 0)
    assert report.chain_start is not None
    assert report.chain_start.position == 1


# -- (i) links cleared, then an event edited -------------------------------------------------


async def test_cleared_links_then_an_edit_are_found(log: Log, key: bool, anchored: bool) -> None:
    """From the chain start on, every event must be linked: cleared links are not events
    that 'predate the chain' (they passed as such before links covered the chain start)."""
    anchors = await written(log, anchored)
    for row in log.rows():
        if row.stream == "order-1":
            log.put([msgspec.structs.replace(row, hash=None)])
    log.change("order-1", 2, data='{"n": 99, "s": 1}')
    report = await checked(log, anchors)
    expected = {("order-1", version, REMOVED) for version in range(4)}
    if anchored:
        expected.add(("order-1", 3, ANCHOR))
    assert found(report) == expected
    assert report.unlinked == 0


# -- (ii) two events swap positions ----------------------------------------------------------


async def test_swapped_positions_are_found(log: Log, key: bool, anchored: bool) -> None:
    """order-0's version 1 (position 4) and order-2's version 1 (position 6) trade places:
    the log a projection reads is reordered, every field of both events unchanged."""
    anchors = await written(log, anchored)
    rows = {row.position: row for row in log.rows()}
    a, b = rows[4], rows[6]
    swapped = [msgspec.structs.replace(a, position=6), msgspec.structs.replace(b, position=4)]
    log.put(swapped, removed=[4, 6])
    report = await checked(log, anchors)
    assert found(report) == {("order-0", 1, ALTERED), ("order-2", 1, ALTERED)}
    assert {p.position for p in report.problems} == {4, 6}


async def test_swapped_positions_with_the_links_recomputed(
    log: Log, key: bool, anchored: bool
) -> None:
    """The intruder also recomputes a plain chain: found with the key (plain links are not
    keyed ones) or against anchors (the streams' ends moved); without either, by design,
    nothing tells."""
    anchors = await written(log, anchored)
    rows = {row.position: row for row in log.rows()}
    a, b = rows[4], rows[6]
    swapped = [msgspec.structs.replace(a, position=6), msgspec.structs.replace(b, position=4)]
    log.put(swapped, removed=[4, 6])
    relink_plain(log)
    report = await checked(log, anchors)
    if key:
        assert ("", None, "the chain start record does not match its hash: moved or forged") in (
            found(report)
        )
        assert {(s, v) for s, v, what in found(report) if what == ALTERED} == {
            (f"order-{s}", v) for s in range(3) for v in range(4)
        }  # no plain link is the keyed one
    if anchored:
        changed = ["order-0", "order-1", "order-2"] if key else ["order-0", "order-2"]
        assert {(s, v) for s, v, what in found(report) if what == ANCHOR} == {
            (stream, 3) for stream in changed
        }  # with the key, order-1's plain links differ from its keyed ones too
    if not key and not anchored:
        assert report.ok  # undetectable by design: see docs/security.md


# -- (iii) a category column changed ---------------------------------------------------------


async def test_a_changed_category_is_found(log: Log, key: bool, anchored: bool) -> None:
    """A category read (read_all(category=...), category subscriptions) would skip the
    event: verify recomputes the category from the stream name, key or not."""
    anchors = await written(log, anchored)
    log.change("order-1", 1, category="invoice")
    report = await checked(log, anchors)
    assert found(report) == {
        ("order-1", 1, "the category column says 'invoice', the stream's category is 'order'")
    }


@pytest.mark.parametrize(
    "change",
    [
        {"raw_data": b"\x00\x02"},
        {"content_type": "text/plain"},
        {"content_type": None, "raw_data": None},
        {"raw_metadata": b"n"},
        {"raw_metadata": None},
    ],
    ids=["raw-bytes", "content-type", "raw-dropped", "raw-metadata", "raw-metadata-dropped"],
)
async def test_changed_raw_payloads_are_found(log: Log, key: bool, change: dict[str, Any]) -> None:
    """The chain covers payloads kept as bytes (``RawData``) and their content type."""
    raw = eskit.RawData("application/octet-stream", b"\x00\x01")
    async with log.opened() as store:
        await store.append("blob-1", [eskit.NewEvent("Raw", raw, eskit.RawData("", b"m"))])
        assert (await verify(store)).ok
    log.change("blob-1", 0, **change)
    report = await checked(log, None)
    assert found(report) == {("blob-1", 0, ALTERED)}


# -- (iv) the chain start moved --------------------------------------------------------------


async def test_a_moved_chain_start_is_found_with_a_key_or_anchors(
    log: Log, key: bool, anchored: bool
) -> None:
    """The intruder moves the chain start past the log, so that its events would seem to
    predate the chain, clears their links and edits one. Its hash is recomputed plain:
    with the key, it does not match; against anchors, the chain start moved. Without
    either, by design, nothing tells (the store reads as one upgraded just now)."""
    anchors = await written(log, anchored)
    log.put([msgspec.structs.replace(row, hash=None) for row in log.rows()])
    log.change("order-1", 2, data='{"n": 99, "s": 1}')
    log.put_chain_start(ChainStart(EVENTS + 1, chain.chain_start_hash(EVENTS + 1, None)))
    report = await checked(log, anchors)
    problems = found(report)
    moved = "the chain start record does not match its hash: moved or forged"
    assert (("", None, moved) in problems) == key
    if anchored:
        assert (
            "",
            None,
            f"the chain start moved: the anchor has position 1, the store records {EVENTS + 1}",
        ) in problems
        # checked from the anchored start: every cleared link is found
        assert {(s, v) for s, v, what in problems if what == REMOVED} == {
            (f"order-{s}", v) for s in range(3) for v in range(4)
        }
    if not key and not anchored:
        assert report.ok  # undetectable by design
        assert report.unlinked == EVENTS


async def test_a_chain_start_moved_without_its_hash_is_found(
    log: Log, key: bool, anchored: bool
) -> None:
    """Moved, its hash kept: the hash is of another position, in every combination (and
    with the key, the intruder cannot make the right one)."""
    anchors = await written(log, anchored)
    start = (await checked(log, None)).chain_start
    assert start is not None
    log.put_chain_start(ChainStart(EVENTS + 1, start.hash))
    report = await checked(log, anchors)
    assert not report.ok
    assert ("", None, "the chain start record does not match its hash: moved or forged") in (
        found(report)
    )


# -- (v) a store upgraded from a release whose links did not cover positions -----------------


@pytest.fixture(params=["sqlite", "postgres"])
async def upgraded(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SQLLog:
    """The store c400693 wrote (11 events, v1 links, keyed), opened once by this eskit."""
    monkeypatch.setenv(chain.AUDIT_KEY_ENV, AUDIT_KEY)
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        shutil.copyfile(FIXTURES / RELEASE / "sqlite.db", path)
        log: SQLLog = SQLiteLog(f"sqlite:///{path}")
    else:
        log = PostgresLog(load_dump(RELEASE))
    async with log.opened():
        pass  # upgraded on open
    return log


def release_anchors(log: SQLLog) -> Anchors:
    backend = "sqlite" if isinstance(log, SQLiteLog) else "postgres"
    return load_anchors(FIXTURES / RELEASE / f"{backend}.anchors.jsonl")


async def test_an_upgraded_store_passes_and_its_chain_starts_after_its_old_events(
    upgraded: SQLLog,
) -> None:
    report = await checked(upgraded, release_anchors(upgraded))
    assert report.ok, report.problems
    assert report.chain_start is not None
    assert report.chain_start.position == 12  # its old events keep their v1 links
    assert (report.events, report.unlinked) == (11, 0)
    async with upgraded.opened() as store:
        await store.append("invoice-1", [eskit.NewEvent("InvoicePaid", {})], expected_version=2)
    again = await checked(upgraded, report.anchors())
    assert again.ok, again.problems
    assert again.chain_start == report.chain_start
    (new,) = [row for row in upgraded.rows() if row.position == 12]
    old_end = bytes.fromhex(release_anchors(upgraded).streams["invoice-1"].hash)
    assert new.hash == new.expected(old_end, bytes.fromhex(AUDIT_KEY))  # v2, after a v1 link


async def test_an_old_event_of_an_upgraded_store_is_still_checked(upgraded: SQLLog) -> None:
    """Before the chain start, links are checked in the format they were written in."""
    upgraded.change("invoice-1", 1, data='{"sku": "a", "amount": 1}')
    report = await checked(upgraded, None)
    assert found(report) == {("invoice-1", 1, ALTERED)}


async def test_old_links_cleared_in_an_upgraded_store_are_found_only_against_anchors(
    upgraded: SQLLog,
) -> None:
    """Events before the chain start may have no link (written before eskit kept one), so
    a stream whose old links are all cleared reads as older than the chain: only its anchor,
    saved while it was linked, shows otherwise (documented in docs/security.md)."""
    upgraded.put(
        [msgspec.structs.replace(r, hash=None) for r in upgraded.rows() if r.stream == "invoice-2"]
    )
    assert (await checked(upgraded, None)).ok
    assert (await checked(upgraded, None)).unlinked == 2
    report = await checked(upgraded, release_anchors(upgraded))
    assert found(report) == {("invoice-2", 1, ANCHOR)}


# -- the chain start record is written once --------------------------------------------------


async def test_the_chain_start_refuses_changes_through_a_plain_connection(
    tmp_path: Path,
) -> None:
    """Like the log (migrations SQLite 002, PostgreSQL 004), only past the guard triggers,
    as an intruder, can it be changed."""
    sqlite_url, postgres_url = f"sqlite:///{tmp_path}/events.db", postgres.store_url()
    for url in (sqlite_url, postgres_url):
        async with eskit.open_store(url):
            pass
    with sqlite3.connect(sqlite_path(sqlite_url)) as conn:
        for statement in ("UPDATE chain_start SET position = 99", "DELETE FROM chain_start"):
            with pytest.raises(sqlite3.IntegrityError, match="the chain start is written once"):
                conn.execute(statement)
    schema = postgres_url.rsplit("schema=", 1)[1]
    for statement in (
        "UPDATE eskit_chain_start SET position = 99",
        "DELETE FROM eskit_chain_start",
        "TRUNCATE eskit_chain_start",
    ):
        with psycopg.connect(postgres.database_url(), autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"'.encode())
            with pytest.raises(psycopg.errors.RestrictViolation, match="written once"):
                conn.execute(statement.encode())


async def test_a_removed_chain_start_record_is_found(tmp_path: Path) -> None:
    log = SQLiteLog(f"sqlite:///{tmp_path}/events.db")
    await written(log, anchored=False)
    with log.connection() as conn:
        conn.execute("DELETE FROM chain_start")
    report = await checked(log, None)
    assert found(report) == {("", None, "no chain start is recorded: the record was removed")}
