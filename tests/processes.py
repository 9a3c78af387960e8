"""``eskit`` commands in processes of their own, as an operator runs them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCHDOG = 60.0
"""Seconds after which a process still running is killed: a hung one fails its test, not CI."""


@contextlib.contextmanager
def eskit_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``eskit args`` running, its stdout and stderr piped; killed at the end if it still
    runs (a failed assertion must not leave it behind), and after ``WATCHDOG`` at the latest."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eskit.cli", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(WATCHDOG, process.kill)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
