"""A PostgreSQL primary and a streaming standby of the test's own, on loopback ports.

``Cluster`` runs PostgreSQL 15's binaries (``ESKIT_TEST_PG_BIN``, default
``/usr/lib/postgresql/15/bin``): ``initdb`` a primary, ``pg_basebackup -R`` a standby from it,
then ``kill`` (an immediate stop: no checkpoint, no goodbye to clients, as a crash) and
``promote``. The server refuses to run as root: as root, every binary runs as the
``postgres`` OS user, in a temporary directory it owns. Everything is stopped and removed on
``close``, and clusters whose test run was killed are removed by the next one. Outside CI a
machine without the binaries skips; under ``CI=true`` it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

BIN = Path(os.environ.get("ESKIT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
_USER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip, or fail under ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the failover tests must run)")
    pytest.skip(reason)


class Proxy:
    """A TCP relay from a loopback port to ``target`` that can hold what passes (``held``):
    put between a standby and its primary, it makes the standby lag for as long as it
    holds."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.held = threading.Event()
        self._closed = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="ha-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                continue
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._closed:
                if self.held.is_set():
                    time.sleep(0.01)
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        for end in self._sockets:
            with contextlib.suppress(OSError):
                end.close()


class Cluster:
    """A primary and one standby, synchronous (``remote_apply``) or asynchronous.
    ``inherited``: the standby keeps the primary's synchronous settings (as when they are
    in ``postgresql.conf``, which ``pg_basebackup`` copies): once promoted, its commits wait
    for a standby it does not have."""

    def __init__(
        self, synchronous: bool = True, inherited: bool = False, proxied: bool = False
    ) -> None:
        if not (BIN / "initdb").exists():
            unavailable(f"no PostgreSQL binaries at {BIN}")
        self.synchronous, self.inherited = synchronous, inherited
        self.as_root = os.geteuid() == 0
        self._reap_orphans()
        self.root = Path(tempfile.mkdtemp(prefix="eskit-ha-"))
        (self.root / "owner").write_text(str(os.getpid()))
        if self.as_root:
            shutil.chown(self.root, _USER, _USER)
        self.ports = {"primary": _free_port(), "standby": _free_port()}
        self.running: set[str] = set()
        self.primary = "primary"
        self.proxy = Proxy(self.ports["primary"]) if proxied else None
        """Between the standby and the primary, when ``proxied``: ``hold`` makes it lag."""

    def _reap_orphans(self) -> None:
        """Stop and remove the clusters of test runs that were killed before cleaning up
        (their owner process is gone)."""
        for root in Path(tempfile.gettempdir()).glob("eskit-ha-*"):
            owner = root / "owner"
            pid = owner.read_text().strip() if owner.exists() else ""
            if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
                continue
            for node in ("primary", "standby"):
                if (root / node / "postmaster.pid").exists():
                    self._run(
                        "pg_ctl", "-D", str(root / node), "-m", "immediate", "stop", check=False
                    )
            shutil.rmtree(root, ignore_errors=True)

    # -- running the binaries -------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", _USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")
        return result

    def _start(self, node: str, *settings: str) -> None:
        options = [
            f"-p {self.ports[node]}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c fsync=off",  # a process crash keeps the page cache: no data is lost
            "-c hot_standby=on",
            "-c wal_level=replica",
            "-c max_wal_senders=4",
            *settings,
        ]
        log = self.root / f"{node}.log"
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / node),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )
        self.running.add(node)

    # -- the cluster ----------------------------------------------------------------------

    def start(self) -> Cluster:
        try:
            self._run(
                "initdb",
                "-D",
                str(self.root / "primary"),
                "-U",
                _USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
            sync = (
                ["-c synchronous_standby_names='*'", "-c synchronous_commit=remote_apply"]
                if self.synchronous
                else []
            )
            self._start("primary", *sync)
            self._run(
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.ports["primary"]),
                "-U",
                _USER,
                "-D",
                str(self.root / "standby"),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            )
            # Its own settings, not the primary's: once promoted it waits for no standby.
            settings = sync if self.inherited else ["-c synchronous_standby_names=''"]
            if self.proxy is not None:
                upstream = f"host=127.0.0.1 port={self.proxy.port} user={_USER}"
                settings = [*settings, f"-c primary_conninfo='{upstream}'"]
            self._start("standby", *settings)
            with psycopg.connect(self.dsn("primary", "postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE ha")
            self.wait_replayed()
        except BaseException:
            self.close()
            raise
        return self

    def dsn(self, node: str, database: str = "ha") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.ports[node]}/{database}"

    def url(self, **query: str) -> str:
        """The multi-host URL an application uses: whichever node is the primary."""
        hosts = ",".join(f"127.0.0.1:{self.ports[n]}" for n in ("primary", "standby"))
        params = "&".join(
            f"{k}={v}" for k, v in {"target_session_attrs": "read-write", **query}.items()
        )
        return f"postgresql://{_USER}@{hosts}/ha?{params}"

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby replayed everything the primary wrote so far."""
        with psycopg.connect(self.dsn("primary", "postgres"), autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn("standby", "postgres"), autocommit=True) as conn:
            while True:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)
                ).fetchone()
                if done is not None and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the standby did not catch up")
                time.sleep(0.05)

    def kill(self, node: str = "primary") -> None:
        """Stop ``node`` the way a crash does: no shutdown checkpoint, clients cut off."""
        self._run("pg_ctl", "-D", str(self.root / node), "-m", "immediate", "stop")
        self.running.discard(node)

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "standby"), "-w", "promote")
        self.primary = "standby"

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        for node in list(self.running):
            with contextlib.suppress(Exception):
                self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)
