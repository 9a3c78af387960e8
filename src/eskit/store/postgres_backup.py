"""Backup and restore of a PostgreSQL store: ``pg_dump`` of its schema, as documented, and
eskit's own digests, taken in the very snapshot the dump reads.

- **Copy.** A ``REPEATABLE READ, READ ONLY`` transaction exports its snapshot
  (``pg_export_snapshot``) and ``pg_dump --snapshot`` dumps the store's schema from it,
  in the custom format: the log, the head, stream metadata, snapshots, removals, the chain
  start, and the read models, checkpoints and subscription groups projections keep in the
  store's schema. The same transaction then digests every table, so the digests describe
  exactly what the dump holds, however many appends commit meanwhile.
- **Restore.** ``pg_restore`` turns the archive into SQL and ``psql --single-transaction``
  runs it in one transaction, followed by eskit's check of every table's digest and, when
  the target schema has another name, a rename: a digest that differs, a role that does
  not exist, a restore killed midway, all roll the whole restore back. Restoring beside
  the schema the backup was taken from, in the same database, works too.

Digests use the rows' text form (``md5(row::text)``) under fixed settings (time zone UTC,
ISO dates, hex bytea, shortest exact floats), summed in ``numeric`` per 64-bit half.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from eskit.store.backup_file import BackupError, Progress, Snapshot, TableDigest

BOOKKEEPING: Final = frozenset({"eskit_head", "eskit_migrations", "eskit_chain_start"})
"""Tables that hold rows in a new, empty store."""
SETTINGS: Final = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)
"""What a row's text form depends on, fixed for both ends of a digest."""


def tool(name: str) -> str:
    """Where ``pg_dump``, ``pg_restore`` or ``psql`` is: on PATH, else the newest
    ``/usr/lib/postgresql/*/bin``. Raises ``BackupError`` if it is nowhere."""
    found = shutil.which(name)
    if found is not None:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: [int(p) for p in Path(path).parts[-3].split(".") if p.isdigit()],
    )
    if not versions:
        raise BackupError(
            f"{name} not found: install PostgreSQL's client tools (the server's major version"
            " or newer) and put them on PATH"
        )
    return versions[-1]


class PostgresBackup:
    """The backup capability of a PostgreSQL store (``PostgresStore.backup_engine``)."""

    backend: Final = "postgresql"
    steps: Final = "steps"
    scratch: Final = None
    """The archive is unpacked for ``pg_restore`` in the system's temporary folder."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.conninfo = conninfo
        self.schema = schema

    def copy(self, payload: Path, progress: Progress | None = None) -> Snapshot:
        """Dump the store's schema, as of one snapshot, into ``payload`` and digest it."""
        pg_dump = tool("pg_dump")
        dsn, env = _without_password(self.conninfo)
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            exported = _one(conn, "SELECT pg_export_snapshot()")
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    f"--snapshot={exported}",
                    f'--schema="{self.schema}"',
                    "--no-password",
                    f"--file={payload}",
                    f"--dbname={dsn}",
                ],
                "pg_dump",
                env,
            )
            measured = measure(conn, self.schema, progress)
            conn.rollback()
        return measured

    def is_empty(self) -> bool:
        """Whether the target schema holds nothing worth keeping: it does not exist, or
        its tables are empty but for the bookkeeping of a new store."""
        with self._connect(autocommit=True) as conn:
            return all(
                name in BOOKKEEPING
                or conn.execute(
                    sql.SQL("SELECT 1 FROM {}.{} LIMIT 1").format(
                        sql.Identifier(self.schema), sql.Identifier(name)
                    )
                ).fetchone()
                is None
                for name in _tables(conn, self.schema)
            )

    def restore(
        self, payload: Path, snapshot: Snapshot, force: bool, progress: Progress | None = None
    ) -> None:
        """Restore the archive into this schema in one transaction, checked before COMMIT."""
        source, target = snapshot.schema or "public", self.schema
        with self._connect(autocommit=True) as conn:
            exists = _schema_exists(conn, target)
            occupied = source != target and _schema_exists(conn, source)
        before = [] if force or not exists else [_refuse_events(target)]
        if exists:
            before.append(f"DROP SCHEMA {_name(target)} CASCADE")
        # The archive creates the schema it was taken from. If another schema of that name
        # lives in the target database (the store backed up, say), it steps aside for the
        # transaction: renamed, and renamed back before COMMIT, so other sessions never
        # see it under another name.
        aside = f"eskit_aside_{secrets.token_hex(8)}"
        if occupied:
            before.append(f"ALTER SCHEMA {_name(source)} RENAME TO {_name(aside)}")
        after = [*SETTINGS, *_checks(source, snapshot)]
        if source != target:
            after.append(f"ALTER SCHEMA {_name(source)} RENAME TO {_name(target)}")
        if occupied:
            after.append(f"ALTER SCHEMA {_name(aside)} RENAME TO {_name(source)}")
        if progress is not None:
            progress(0, 1)
        dsn, env = _without_password(self.conninfo)
        restore = subprocess.Popen(
            [tool("pg_restore"), "--file=-", str(payload)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert restore.stdout is not None
        command = [tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        command += [f"--dbname={dsn}", "--no-password"]
        for statement in before:
            command += ["-c", statement]
        command += ["-f", "-"]
        for statement in after:
            command += ["-c", statement]
        psql = subprocess.run(
            command,
            stdin=restore.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        restore.stdout.close()
        restore.wait()
        assert restore.stderr is not None
        dumped = restore.stderr.read().decode(errors="replace").strip()
        restore.stderr.close()
        if restore.returncode != 0 or psql.returncode != 0:
            why = psql.stderr.decode(errors="replace").strip() or dumped
            raise BackupError(
                f"restoring into schema {target} failed, nothing was changed: {_last(why)}"
            )
        if progress is not None:
            progress(1, 1)

    def digests(self) -> Snapshot:
        """The schema's head, events and table digests, as ``copy`` measures them."""
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            measured = measure(conn, self.schema)
            conn.rollback()
        return measured

    def _connect(self, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=10)
        except psycopg.Error as error:
            raise BackupError(f"cannot connect to PostgreSQL: {_last(str(error))}") from error


def measure(
    conn: psycopg.Connection[Any], schema: str, progress: Progress | None = None
) -> Snapshot:
    """Digest every table of ``schema`` in the connection's transaction."""
    for setting in SETTINGS:
        conn.execute(setting.encode())
    names = _tables(conn, schema)
    if "eskit_events" not in names:
        raise BackupError(f"schema {schema} holds no eskit store")
    tables = {}
    for done, name in enumerate(names, 1):
        rows, _, digest = str(_one(conn, _digest_query(schema, name))).partition("|")
        tables[name] = TableDigest(int(rows), digest)
        if progress is not None:
            progress(done, len(names))
    head = int(_one(conn, f"SELECT position FROM {_name(schema)}.eskit_head"))
    return Snapshot(head, tables["eskit_events"].rows, tables, schema)


def _digest_query(schema: str, table: str) -> str:
    half = "coalesce(sum(('x' || substr(h, {}, 16))::bit(64)::bigint::numeric), 0)::text"
    return (
        f"SELECT count(*)::text || '|' || {half.format(1)} || '|' || {half.format(17)}"
        f" FROM (SELECT md5(t::text) AS h FROM {_name(schema)}.{_name(table)} AS t) AS rows"
    )


def _checks(schema: str, snapshot: Snapshot) -> list[str]:
    """DO blocks that raise (and so roll the restore back) unless the restored schema has
    exactly the backup's tables, each with the backup's digest."""
    names = ",".join(sorted(snapshot.tables))
    checks = [
        _do(
            "SELECT coalesce(string_agg(tablename::text, ',' ORDER BY tablename::text), '')"
            f" INTO found FROM pg_tables WHERE schemaname = {_literal(schema)}",
            names,
            f"the restored schema's tables differ from the backup's ({names})",
        )
    ]
    for name, table in sorted(snapshot.tables.items()):
        checks.append(
            _do(
                _digest_query(schema, name).replace(" FROM (", " INTO found FROM (", 1),
                f"{table.rows}|{table.digest}",
                f"table {name} differs from the backup after restoring it",
            )
        )
    return checks


def _do(query: str, expected: str, message: str) -> str:
    return (
        "DO $eskit$ DECLARE found text; BEGIN "
        f"{query}; IF found IS DISTINCT FROM {_literal(expected)} THEN "
        f"RAISE EXCEPTION 'eskit: %', {_literal(message)}; END IF; END $eskit$"
    )


def _refuse_events(schema: str) -> str:
    """Refuses, in the restore's transaction, a target that got events since it was
    found empty."""
    table = f"{_name(schema)}.eskit_events"
    return (
        "DO $eskit$ DECLARE found boolean; BEGIN "
        f"IF to_regclass({_literal(table)}) IS NOT NULL THEN "
        f"EXECUTE {_literal(f'SELECT EXISTS (SELECT 1 FROM {table})')} INTO found; "
        "IF found THEN RAISE EXCEPTION 'eskit: %', "
        f"{_literal(f'schema {schema} is not empty: restore with force to replace it')};"
        " END IF; END IF; END $eskit$"
    )


def _tables(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    return [str(row[0]) for row in rows]


def _schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return found is not None


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _without_password(conninfo: str) -> tuple[str, dict[str, str]]:
    """The connection string for a tool's command line, and its environment: a password
    goes in ``PGPASSWORD``, never in arguments other users can list."""
    params = conninfo_to_dict(conninfo)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _run(command: list[str], name: str, env: dict[str, str]) -> None:
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if done.returncode != 0:
        raise BackupError(f"{name} failed: {_last(done.stderr.decode(errors='replace'))}")


def _last(text: str) -> str:
    """The gist of a tool's error output: its error lines, on one line."""
    lines = [line for line in text.strip().splitlines() if "ERROR" in line or "error" in line]
    return " ".join((lines or text.strip().splitlines() or ["no output"])[-3:])
