"""``eskit projections status|run|rebuild|reset|skip`` on a real SQLite file, with the
projections of ``tests/cli/apps.py`` loaded through ``--app``."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

import eskit
from eskit.projections import Database, PartitionedWorker, ProjectionRunner, database_for
from eskit.projections import state as st
from eskit.projections.leases import partition_of
from tests.cli.apps import InvoiceTotals
from tests.cli.conftest import append, invoke
from tests.cli.test_streams import rows
from tests.processes import eskit_process
from tests.projections.models import store_url
from tests.projections.partitioning import Poisoned, all_at, fill, ordered_counts, stuck

APP = "tests.cli.apps:projections"


def path_of(url: str) -> str:
    return url.removeprefix("sqlite:///")


def read_model(url: str) -> list[tuple[str, int]]:
    with sqlite3.connect(path_of(url)) as conn:
        return conn.execute("SELECT stream, due FROM invoice_totals ORDER BY stream").fetchall()


def status_rows(url: str) -> dict[str, list[str]]:
    """Each projection's status, read through ``--json``: its values in the table's order
    (name, version, position, lag, status, updated, rebuild, skips, partitions, error)."""
    result = invoke(["projections", "status", url, "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return {r["name"]: ["" if v is None else str(v) for v in r.values()] for r in records}


def catch_up(url: str, app: str = "tests.cli.apps:projections") -> None:
    result = invoke(["projections", "run", url, "--app", app, "--until-caught-up"])
    assert result.exit_code == 0, result.output


def test_status_before_any_run(url: str) -> None:
    result = invoke(["projections", "status", url])
    assert result.exit_code == 0
    assert "no projections have run" in result.stdout


@pytest.mark.parametrize("app", ["tests.cli.apps:projections", "tests.cli.apps:build"])
def test_run_until_caught_up_builds_the_read_model(url: str, app: str) -> None:
    result = invoke(["projections", "run", url, "--app", app, "--until-caught-up"])

    assert result.exit_code == 0, result.output
    (row,) = rows(result.stdout)
    assert row[:5] == ["invoice_totals", "1", "5", "0", "stopped"]
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]


def test_status_shows_checkpoint_lag_and_skips(url: str) -> None:
    catch_up(url)
    row = status_rows(url)["invoice_totals"]
    assert [row[i] for i in (1, 2, 3, 4, 6, 7, 8)] == ["1", "5", "0", "running", "", "0", ""]


def test_status_shows_a_rebuild_in_progress(url: str) -> None:
    """A rebuild interrupted after its first batch (of 2 events) is resumable: status shows
    how far it got."""

    class Interrupted(Exception):
        pass

    def interrupt(position: int, head: int) -> None:
        raise Interrupted

    async def start_rebuild() -> None:
        async with (
            eskit.open_store(url) as store,
            ProjectionRunner(store, [InvoiceTotals()]) as runner,
        ):
            await runner.wait_until(5)
            with pytest.raises(Interrupted):
                await runner.rebuild("invoice_totals", progress=interrupt)

    asyncio.run(start_rebuild())
    row = status_rows(url)["invoice_totals"]
    assert (row[2], row[6]) == ("5", "v1: 2/5 (40%)")


def test_status_reads_another_database_or_says_it_is_missing(url: str, tmp_path: Path) -> None:
    result = invoke(["projections", "status", url, "--database", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no projection database at" in result.stderr


def test_rebuild_prints_the_digest_of_the_new_read_model(url: str) -> None:
    catch_up(url)
    result = invoke(
        ["projections", "rebuild", url, "invoice_totals", "--app", "tests.cli.apps:projections"]
    )

    assert result.exit_code == 0, result.output
    assert "projection invoice_totals rebuilt up to position 5" in result.stdout
    assert "rebuilding invoice_totals" in result.stderr  # the progress bar
    with sqlite3.connect(path_of(url)) as conn:
        expected = st.digest(conn, ["invoice_totals"])
        generation = conn.execute("SELECT generation FROM eskit_projections").fetchone()[0]
    assert f"digest sha256:{expected}" in result.stdout
    assert generation == 2  # a new build, switched in
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]


def test_rebuild_of_an_unknown_projection(url: str) -> None:
    result = invoke(["projections", "rebuild", url, "nope", "--app", "tests.cli.apps:projections"])
    assert result.exit_code == 1
    assert "no projection named 'nope'" in result.stderr


def test_reset_drops_tables_and_checkpoint(url: str) -> None:
    catch_up(url)
    result = invoke(["projections", "reset", url, "invoice_totals", "--yes"])

    assert result.exit_code == 0, result.output
    assert "no projections have run" in invoke(["projections", "status", url]).stdout
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        read_model(url)
    catch_up(url)  # and it starts over
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]


def test_reset_asks_first(url: str) -> None:
    catch_up(url)
    result = invoke(["projections", "reset", url, "invoice_totals"], input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]

    confirmed = invoke(["projections", "reset", url, "invoice_totals"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output


def test_reset_of_an_unknown_projection(url: str) -> None:
    result = invoke(["projections", "reset", url, "nope", "--yes"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no projection named 'nope'")


def test_a_stuck_projection_fails_the_run_and_is_skipped(url: str) -> None:
    asyncio.run(append(url, "invoice-9", eskit.NewEvent("Poison", {})))
    stuck = invoke(
        ["projections", "run", url, "--app", "tests.cli.apps:fragile", "--until-caught-up"]
    )
    assert stuck.exit_code == 1
    assert "stuck: fragile" in stuck.stderr
    row = status_rows(url)["fragile"]
    assert (row[4], row[9]) == ("stuck", "at 6 (Poison): RuntimeError: cannot digest poison")

    skipped = invoke(["projections", "skip", url, "fragile", "--reason", "poison, ticket 12"])

    assert skipped.exit_code == 0, skipped.output
    assert "skipped event" in skipped.stdout
    assert "(Poison) at position 6" in skipped.stdout
    row = status_rows(url)["fragile"]
    assert (row[2], row[4], row[7]) == ("6", "running", "1")
    catch_up(url, "tests.cli.apps:fragile")


def test_skip_of_a_projection_that_is_not_stuck(url: str) -> None:
    catch_up(url)
    result = invoke(["projections", "skip", url, "invoice_totals", "--reason", "why not"])
    assert result.exit_code == 1
    assert "is not stuck" in result.stderr


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("tests.cli.apps", "--app must be module:attribute"),
        ("tests.cli.missing:projections", "cannot import tests.cli.missing"),
        ("tests.cli.apps:nothing", "has no attribute nothing"),
        ("tests.cli.apps:not_projections", "is not a Projection"),
    ],
)
def test_app_errors_are_one_clear_line(url: str, app: str, message: str) -> None:
    result = invoke(["projections", "run", url, "--app", app, "--until-caught-up"])
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_follows_until_sigterm_then_stops_gracefully(url: str) -> None:
    """In a process of its own, as an operator runs it: it says when it has caught up, and
    SIGTERM stops it with exit status 0 and the checkpoint saved."""
    with eskit_process("projections", "run", url, "--app", APP) as process:
        assert process.stderr is not None
        seen: list[str] = []
        while not seen or "caught up" not in seen[-1]:
            line = process.stderr.readline()
            assert line, f"the runner ended early: {''.join(seen)}"
            seen.append(line)
        assert "caught up to position 5" in seen[-1]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopping" in stderr
    (row,) = rows(stdout)
    assert row[:5] == ["invoice_totals", "1", "5", "0", "stopped"]
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]


def test_work_runs_a_partitioned_worker_until_sigterm(url: str) -> None:
    """A worker of a partitioned projection: it takes every partition (it is alone), builds
    the read model, shows in ``status`` with its partitions, and gives them back on
    SIGTERM."""
    worker = ["projections", "work", url, "invoice_totals", "--app", APP]
    with eskit_process(*worker, "--partitions", "4", "--lease", "1") as process:
        assert process.stderr is not None
        assert "worker" in process.stderr.readline()
        for _ in range(200):
            status = status_rows(url).get("invoice_totals")
            if status is not None and status[2] == "5":
                break
            threading.Event().wait(0.05)
        assert status is not None
        assert status[2:4] == ["5", "0"]
        assert status[8] == "4 on 1"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert [row[2] for row in rows(stdout)] == ["free"] * 4
    assert read_model(url) == [("invoice-1", 100), ("invoice-2", 0)]


def test_work_refuses_an_unknown_projection(url: str) -> None:
    result = invoke(["projections", "work", url, "nope", "--app", APP])
    assert result.exit_code == 1
    assert "has no projection named 'nope'" in result.output


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_status_and_skip_of_a_stuck_partition(backend: str, tmp_path: Path) -> None:
    """A partitioned projection with a partition stuck on a poison event shows as stuck,
    with that partition's error; ``skip`` steps the partition over it while its worker
    runs, and the partition goes on."""
    url = store_url(backend, tmp_path)
    bad = partition_of("poison-0", 4)
    async with eskit.open_store(url) as store:
        db = database_for(store)
        try:
            await fill(store, streams=6, each=2)
            poison = (await store.append("poison-0", [eskit.NewEvent("Poison", {})])).last_position
            async with PartitionedWorker(store, Poisoned(), partitions=4, lease=0.6, backoff=0.01):
                await stuck(db, "ordered")
                status = await asyncio.to_thread(status_rows, url)
                row = status["ordered"]
                assert (row[4], row[7], row[8]) == ("stuck", "0", "4 on 1")
                assert row[9] == (
                    f"partition {bad} at {poison} (Poison): RuntimeError: cannot digest poison"
                    " (1 of 4 stuck)"
                )

                skip = ["projections", "skip", url, "ordered", "--reason", "poison, ticket 12"]
                skipped = await asyncio.to_thread(invoke, skip)

                assert skipped.exit_code == 0, skipped.output
                assert f"(Poison) at position {poison}" in skipped.stdout
                more = await fill(store, streams=6, each=1)
                await all_at(db, "ordered", more)
                row = (await asyncio.to_thread(status_rows, url))["ordered"]
                assert (row[2], row[4], row[7], row[9]) == (str(more), "running", "1", "")
                again = await asyncio.to_thread(invoke, skip)
                assert again.exit_code == 1
                assert "is not stuck" in again.stderr
            assert await ordered_counts(db) == {f"s-{n}": 3 for n in range(6)}
            (record,) = await db.read(lambda c: st.skips(c, "ordered"))
            assert (record.position, record.reason) == (poison, "poison, ticket 12")
        finally:
            await db.close()


def test_status_shows_a_failed_tick_as_failing_with_its_error(url: str) -> None:
    """As a process manager's runner stores it when its tick raises; cleared by the next
    tick that succeeds."""
    catch_up(url)
    error = "tick failed at 2030-01-01 12:00:00 UTC: ConnectionError: the mail relay is down"

    async def store_tick(failed: bool) -> None:
        async with eskit.open_store(url) as store:
            database = database_for(store)
            state = await database.read(lambda c: st.load(c, "invoice_totals"))
            assert state is not None
            if failed:
                await database.write(
                    lambda c: st.tick_failed(c, state.name, state.generation, error, 0)
                )
            else:
                await database.write(lambda c: st.tick_succeeded(c, state.name))

    asyncio.run(store_tick(failed=True))
    row = status_rows(url)["invoice_totals"]
    assert (row[4], row[-1]) == ("failing", error)
    asyncio.run(store_tick(failed=False))
    row = status_rows(url)["invoice_totals"]
    assert (row[4], row[-1]) == ("running", "")


@pytest.mark.anyio
async def test_the_cli_and_the_admin_show_the_partition_stuck_earliest(tmp_path: Path) -> None:
    """Two partitions stuck: both screens show the one stuck earliest in the log (the
    lowest error position), not the lowest-numbered one."""
    from eskit.web.admin.repair import dashboard

    url = store_url("sqlite", tmp_path)
    streams = {partition_of(f"poison-{n}", 4): f"poison-{n}" for n in range(20)}
    low, high = min(streams), max(streams)
    async with eskit.open_store(url) as store:
        db = database_for(store)
        try:
            await fill(store, streams=3, each=1)
            first = await store.append(streams[high], [eskit.NewEvent("Poison", {})])
            await store.append(streams[low], [eskit.NewEvent("Poison", {})])
            async with PartitionedWorker(store, Poisoned(), partitions=4, lease=0.6, backoff=0.01):
                await eventually_stuck(db, count=2)
                cli = (await asyncio.to_thread(status_rows, url))["ordered"]
                _, rows = await dashboard(store, None, db)
        finally:
            await db.close()
    (admin,) = rows
    assert cli[9] == (
        f"partition {high} at {first.last_position} (Poison): RuntimeError: cannot digest"
        " poison (2 of 4 stuck)"
    )
    assert (admin.status, admin.error_position) == ("stuck", first.last_position)
    assert admin.error == (
        f"partition {high} (and 1 more partitions): RuntimeError: cannot digest poison"
    )


async def eventually_stuck(db: Database, count: int) -> None:
    """Wait until ``count`` partitions of ``ordered`` are stuck."""
    for _ in range(400):
        if len(await stuck(db, "ordered")) >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{count} partitions not stuck in 20 s")
