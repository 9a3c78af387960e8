"""``eskit grpc`` as a real process on a free port, for KurrentDB's clients to talk to.

``GrpcProcess`` starts ``python -m eskit.cli grpc STORE_URL --listen 127.0.0.1:PORT`` with
any extra options (TLS, tokens, an app), waits until it listens, and stops it with SIGTERM
(SIGKILL if it hangs). Its stderr is kept for the failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP = 30.0


class GrpcProcess:
    def __init__(self, store_url: str, options: Sequence[str] = ()) -> None:
        self.store_url = store_url
        self.options = list(options)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, *, tls: bool = False, user: str | None = None, discover: bool = False) -> str:
        scheme = "kurrentdb+discover" if discover else "kurrentdb"
        login = f"{user}@" if user else ""
        query = "tls=true" if tls else "tls=false"
        return f"{scheme}://{login}{self.address}?{query}"

    def start(self) -> GrpcProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        command = [sys.executable, "-m", "eskit.cli", "grpc", self.store_url]
        command += ["--listen", self.address, *self.options]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"eskit grpc exited {self.process.returncode}: {self.output()}")
            if "serving" in self.output():
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"eskit grpc did not listen within {STARTUP}s: {self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> GrpcProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
