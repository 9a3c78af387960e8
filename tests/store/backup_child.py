"""Restores or takes a backup, slowly, for test_backup_crash.py to SIGKILL midway.

Usage: backup_child.py restore FILE URL, or backup_child.py backup URL FILE. Prints the
phase's name on its first progress call (``restoring``: the restore's transaction has
begun; ``copying``), then goes on a page at a time with a short pause after each step.
PostgreSQL's restore runs in psql, a child of this process, which the test kills with it
(the whole process group).
"""

from __future__ import annotations

import asyncio
import sys
import time

import eskit
from eskit.store import sqlite_backup
from eskit.store.backup import Phases, backup, restore_backup

announced: set[str] = set()


def slowly(watched: str) -> Phases:
    def progress(phase: str, done: int, total: int) -> None:
        if phase != watched:
            return
        if phase not in announced:
            announced.add(phase)
            print(phase, flush=True)
        time.sleep(0.002)

    return progress


async def main(mode: str, first: str, second: str) -> None:
    sqlite_backup.PAGES = 1
    if mode == "restore":
        await restore_backup(first, second, force=True, progress=slowly("restoring"))
    else:
        async with eskit.open_store(first) as store:
            await backup(store, second, progress=slowly("copying"))
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
