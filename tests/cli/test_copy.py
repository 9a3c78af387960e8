"""``eskit copy``: SQLite to PostgreSQL and back with equal digests, a second copy that adds
nothing, a refused target, and the reminder to rebuild projections."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from pathlib import Path

import eskit
from tests.cli.conftest import append, invoke
from tests.postgres import store_url


def digests(output: str) -> dict[str, str]:
    found = dict(re.findall(r"^(source|target): .* digest sha256:([0-9a-f]{64})$", output, re.M))
    assert set(found) == {"source", "target"}, output
    return found


async def logs(*urls: str) -> list[list[tuple[object, ...]]]:
    found: list[list[tuple[object, ...]]] = []
    for url in urls:
        async with eskit.open_store(url) as store:
            found.append(
                [
                    (e.id, e.stream, e.version, e.position, e.type, e.data, e.metadata)
                    async for e in store.read_all()
                ]
            )
    return found


def test_sqlite_to_postgresql_and_back(url: str, tmp_path: Path) -> None:
    postgres = store_url()
    back = f"sqlite:///{tmp_path}/back.db"
    there = invoke(["copy", url, postgres])
    again = invoke(["copy", postgres, back])

    for result in (there, again):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("copied 5 events (5 appended now)\n")
        assert "source: 5 events, last position 5, digest" in result.stdout
        assert "target: 5 events, last position 5, digest" in result.stdout
        assert "the target's log matches the source's" in result.stdout
        assert "events/s" in result.stderr  # the progress bars: each phase counts the events
        assert re.search(r"^copying .* 5/5 ", result.stderr, re.M), result.stderr
        assert re.search(r"^verifying .* 5/5 ", result.stderr, re.M), result.stderr
        assert "10/10" not in result.stderr
    assert len({*digests(there.stdout).values(), *digests(again.stdout).values()}) == 1
    source, middle, target = asyncio.run(logs(url, postgres, back))
    assert source == middle == target


def test_the_reminder_names_the_rebuild_command(url: str, tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path}/copy.db"
    parts = urllib.parse.urlsplit(store_url())
    secret = parts.password or "s3cret"  # a trusted connection does not check it
    host = parts.netloc.rpartition("@")[2]
    postgres = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:{secret}@{host}"))

    to_sqlite = invoke(["copy", url, sqlite])
    to_postgres = invoke(["copy", url, postgres])

    assert to_sqlite.exit_code == to_postgres.exit_code == 0, to_postgres.output
    assert "projections and read models are not copied" in to_sqlite.stderr
    assert f"eskit projections rebuild {sqlite} NAME --app module:attribute\n" in to_sqlite.stderr
    # PostgreSQL keeps its read models itself: the same command, no option that does not exist
    assert "eskit projections rebuild 'postgresql://" in to_postgres.stderr
    assert "NAME --app module:attribute\n" in to_postgres.stderr
    assert "--database" not in to_postgres.stderr
    assert "not implemented" not in to_postgres.stderr
    assert secret not in to_postgres.stderr
    assert f"{parts.username}:***@{host}" in to_postgres.stderr


def test_copying_twice_appends_nothing(url: str, tmp_path: Path) -> None:
    copy = f"sqlite:///{tmp_path}/copy.db"
    first = invoke(["copy", url, copy])
    second = invoke(["copy", url, copy])

    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("copied 5 events (0 appended now)\n")
    assert digests(first.stdout) == digests(second.stdout)
    assert "target: 5 events, last position 5," in second.stdout


def test_a_target_holding_other_events_is_one_error_line(url: str, tmp_path: Path) -> None:
    copy = f"sqlite:///{tmp_path}/copy.db"
    asyncio.run(append(copy, "invoice-1", eskit.NewEvent("Unrelated", {})))

    result = invoke(["copy", url, copy])

    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: the target already holds other events: its position 1 is invoice-1 v0 Unrelated"
    )
    assert "projections" not in result.stderr  # no reminder when nothing was copied
