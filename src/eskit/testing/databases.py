"""Throwaway PostgreSQL databases for a test or benchmark run: named after the machine and
the process, so that a later run on the same machine drops the ones a killed run could not
drop, and other machines' runs on a shared server are left alone."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from typing import Any

import psycopg

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
"""This machine, in a few characters (a database name has at most 63)."""


def run_database(purpose: str) -> str:
    """A new database name for this process's run: ``eskit_<purpose>_<host>_<pid>_<hex>``."""
    return f"eskit_{purpose}_{HOST}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def drop_orphans(conn: psycopg.Connection[Any], purpose: str) -> None:
    """Drop the ``purpose`` databases of this machine's runs whose process is gone."""
    prefix = f"eskit_{purpose}_{HOST}_"
    for (database,) in conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
    ).fetchall():
        pid = str(database)[len(prefix) :].partition("_")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
