"""Run databases: a killed run's database is dropped by the next run on the machine; a
live run's, another purpose's and another machine's are left alone."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from eskit.testing.databases import HOST, drop_orphans, run_database
from tests.postgres import SERVER, database_url


def test_only_this_machines_dead_runs_are_dropped() -> None:
    database_url()  # skips (fails under CI) without a server
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(gone.stdout)
    names = {
        "dead": f"eskit_orphantest_{HOST}_{dead}_00000000",
        "live": run_database("orphantest"),
        "other purpose": f"eskit_otherpurpose_{HOST}_{dead}_00000000",
        "other machine": f"eskit_orphantest_zzzzzz_{dead}_00000000",
    }
    with psycopg.connect(SERVER, autocommit=True) as conn:
        try:
            for name in names.values():
                conn.execute(f'CREATE DATABASE "{name}"')
            drop_orphans(conn, "orphantest")
            left = {
                row[0]
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                    (list(names.values()),),
                )
            }
            assert left == set(names.values()) - {names["dead"]}
        finally:
            for name in names.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
