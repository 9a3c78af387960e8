"""The hash chain: every backend links each stream's events as it writes them, and
``verify`` finds an event altered, removed from the middle or cut off the end, naming where,
by changing the database behind eskit's back as an intruder would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
from eskit.store import chain
from eskit.store.audit import Anchor, Anchors, load_anchors, save_anchors, verify
from tests import postgres
from tests.cli.conftest import invoke
from tests.projections.models import store_url
from tests.store.fixtures.pre_chain import write_pre_chain_file
from tests.store.tamper import sqlite_past_guard, sqlite_path, tamper_postgres, tamper_sqlite

pytestmark = pytest.mark.anyio

KEY = "ab" * 32


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[eskit.EventStore]:
    async with eskit.open_store(store_url(request.param, tmp_path)) as opened:
        yield opened


async def fill(store: eskit.EventStore, streams: int = 3, each: int = 4) -> None:
    for n in range(each):
        for s in range(streams):
            await store.append(f"order-{s}", [eskit.NewEvent("Noted", {"n": n, "s": s})])


async def test_an_untouched_log_verifies(store: eskit.EventStore) -> None:
    await fill(store)
    report = await verify(store)
    assert report.ok, report.problems
    assert (report.events, report.streams, report.unlinked) == (12, 3, 0)
    assert set(report.ends) == {"order-0", "order-1", "order-2"}
    assert {anchor.version for anchor in report.ends.values()} == {3}


async def test_the_links_depend_on_the_audit_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Links written with a key verify with it, and not without it (nor with another)."""
    monkeypatch.setenv(chain.AUDIT_KEY_ENV, KEY)
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        await fill(store)
        assert (await verify(store)).ok
        assert (await verify(store, key=bytes.fromhex(KEY))).ok
        assert not (await verify(store, key=bytes.fromhex("cd" * 32))).ok
        monkeypatch.delenv(chain.AUDIT_KEY_ENV)
        assert not (await verify(store)).ok


def test_a_bad_audit_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(chain.AUDIT_KEY_ENV, "not hex")
    with pytest.raises(ValueError, match="must be hex"):
        chain.audit_key()
    monkeypatch.setenv(chain.AUDIT_KEY_ENV, "abcd")
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        chain.audit_key()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(["a-1", "b-2", "c-3"]), st.integers(1, 4)), min_size=1
    )
)
def test_any_history_verifies_and_every_byte_matters(
    batches: list[tuple[str, int]],
) -> None:
    """For any history: the chain verifies; changing any one stored field of any one event
    is found at exactly that event."""
    import asyncio

    async def check() -> None:
        async with eskit.open_store("memory://") as store:
            for stream, count in batches:
                await store.append(stream, [eskit.NewEvent("E", {"i": i}) for i in range(count)])
            assert (await verify(store)).ok
            rows = store.engine._chain  # type: ignore[attr-defined]
            victim = rows[len(rows) // 2]
            rows[len(rows) // 2] = msgspec.structs.replace(
                victim, data=victim.data.replace("}", ', "x": 1}')
            )
            report = await verify(store)
            assert [(p.stream, p.version) for p in report.problems] == [
                (victim.stream, victim.version)
            ]

    asyncio.run(check())


# -- an intruder with the SQLite file -------------------------------------------------------


@pytest.fixture
async def sqlite_url(tmp_path: Path, anyio_backend: str) -> str:
    url = f"sqlite:///{tmp_path}/events.db"
    async with eskit.open_store(url) as store:
        await fill(store)
    return url


def tamper(url: str, *statements: str) -> None:
    tamper_sqlite(sqlite_path(url), *statements)


async def findings(url: str, **options: object) -> list[tuple[str, int | None, str]]:
    async with eskit.open_store(url) as store:
        report = await verify(store, **options)  # type: ignore[arg-type]
    return [(p.stream, p.version, p.what) for p in report.problems]


Tampering = Callable[[str], None]


@pytest.mark.parametrize(
    ("statement", "found"),
    [
        (
            'UPDATE events SET data = \'{"n": 99, "s": 1}\''
            " WHERE stream = 'order-1' AND version = 2",
            [("order-1", 2, "altered: the link does not match the event")],
        ),
        (
            "UPDATE events SET type = 'Cancelled' WHERE stream = 'order-0' AND version = 0",
            [("order-0", 0, "altered: the link does not match the event")],
        ),
        (
            "UPDATE events SET recorded_at = recorded_at + 1"
            " WHERE stream = 'order-2' AND version = 3",
            [("order-2", 3, "altered: the link does not match the event")],
        ),
        (
            'UPDATE events SET metadata = \'{"user": "mallory"}\''
            " WHERE stream = 'order-2' AND version = 1",
            [("order-2", 1, "altered: the link does not match the event")],
        ),
        (
            "DELETE FROM events WHERE stream = 'order-1' AND version = 1",
            [("order-1", 2, "versions 1..1 are missing")],
        ),
        (
            "UPDATE events SET hash = NULL WHERE stream = 'order-0' AND version = 2",
            [("order-0", 2, "the link was removed")],
        ),
    ],
)
async def test_a_change_behind_eskit_s_back_is_found_and_named(
    sqlite_url: str, statement: str, found: list[tuple[str, int, str]]
) -> None:
    assert await findings(sqlite_url) == []
    tamper(sqlite_url, statement)
    assert await findings(sqlite_url) == found


async def test_a_recomputed_chain_is_found_when_the_writers_had_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intruder who knows the scheme but not the key recomputes the links after his
    change: unkeyed links, which the keyed verification refuses."""
    monkeypatch.setenv(chain.AUDIT_KEY_ENV, KEY)
    url = f"sqlite:///{tmp_path}/events.db"
    async with eskit.open_store(url) as store:
        await fill(store, streams=1, each=3)
    with sqlite_past_guard(sqlite_path(url)) as conn:
        conn.execute("UPDATE events SET data = '{\"n\": 7}' WHERE version = 1")
        previous = None
        for row in conn.execute(
            "SELECT position, stream, category, version, id, type, data, metadata,"
            " recorded_at, NULL FROM events ORDER BY position"
        ).fetchall():
            plain = chain.ChainRow(*row).expected(previous, key=None)
            conn.execute("UPDATE events SET hash = ? WHERE position = ?", (plain, row[0]))
            previous = plain
    found = await findings(url)
    assert found[0] == ("order-0", 0, "altered: the link does not match the event")


async def test_a_cut_off_end_is_found_against_anchors(sqlite_url: str, tmp_path: Path) -> None:
    async with eskit.open_store(sqlite_url) as store:
        anchors = (await verify(store)).anchors()
    path = tmp_path / "anchors.jsonl"
    save_anchors(path, anchors)
    assert load_anchors(path) == anchors
    tamper(sqlite_url, "DELETE FROM events WHERE stream = 'order-2' AND version >= 2")
    assert await findings(sqlite_url) == []  # the chain alone cannot tell
    assert await findings(sqlite_url, anchors=load_anchors(path)) == [
        (
            "order-2",
            1,
            "events removed from the end: the anchor has version 3, the stream ends at 1",
        )
    ]


async def test_events_from_before_the_chain_are_counted_not_checked(tmp_path: Path) -> None:
    """A file written before the chain existed gets the column when opened; its old events
    are reported as unlinked, and the events after them are linked as usual."""
    write_pre_chain_file(tmp_path / "events.db", streams=2, each=2)
    url = f"sqlite:///{tmp_path}/events.db"
    async with eskit.open_store(url) as store:
        await fill(store, streams=2, each=1)
        report = await verify(store)
    assert report.ok, report.problems
    assert (report.events, report.unlinked) == (6, 4)


def test_anchor_files_refuse_garbage(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    path.write_text('{"stream": "a-1", "version": 1, "hash": "00"}\nnot json\n')
    with pytest.raises(ValueError, match=r"anchors\.jsonl:2: not an anchor line"):
        load_anchors(path)
    path.write_text('{"stream": "a-1", "version": 1, "hash": "00"}\n')
    assert load_anchors(path) == Anchors({"a-1": Anchor(1, "00")})


def test_eskit_verify_names_what_was_changed(sqlite_url: str, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    clean = invoke(["verify", sqlite_url, "--save-anchors", str(anchors)])
    assert clean.exit_code == 0, clean.output
    assert "12" in clean.stdout
    assert "the chain starts at position 1" in clean.stdout
    assert anchors.read_text().count("\n") == 4  # three streams and the chain start
    tamper(
        sqlite_url,
        "UPDATE events SET data = '{}' WHERE stream = 'order-1' AND version = 0",
        "DELETE FROM events WHERE stream = 'order-0' AND version = 3",
    )
    result = invoke(["verify", sqlite_url, "--anchors", str(anchors)])
    assert result.exit_code == 1
    assert "altered: the link does not match the event" in result.stdout
    assert "events removed from the end" in result.stdout
    assert "2 problem(s)" in result.output


# -- an intruder with the PostgreSQL database ------------------------------------------------


async def test_a_change_in_postgresql_is_found_and_named(anyio_backend: str) -> None:
    url = postgres.store_url()
    async with eskit.open_store(url) as store:
        await fill(store)
        assert (await verify(store)).ok
        anchors = (await verify(store)).anchors()
    tamper_postgres(
        url,
        "UPDATE eskit_events SET data = '{}' WHERE stream = 'order-1' AND version = 1",
        "DELETE FROM eskit_events WHERE stream = 'order-2' AND version = 3",
    )
    async with eskit.open_store(url) as store:
        report = await verify(store, anchors=anchors)
    assert [(p.stream, p.version, p.what) for p in report.problems] == [
        ("order-1", 1, "altered: the link does not match the event"),
        (
            "order-2",
            2,
            "events removed from the end: the anchor has version 3, the stream ends at 2",
        ),
    ]
