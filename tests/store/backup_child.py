"""Restores a backup, slowly, for test_backup_crash.py to SIGKILL midway.

Usage: backup_child.py FILE URL. Prints ``restoring`` when the restore's transaction has
begun (its first progress call), then restores a page at a time with a short pause after
each step (SQLite); PostgreSQL's restore runs in psql, a child of this process, which the
test kills with it (the whole process group).
"""

from __future__ import annotations

import asyncio
import sys
import time

from eskit.store import sqlite_backup
from eskit.store.backup import restore_backup


def progress(phase: str, done: int, total: int) -> None:
    if phase != "restoring":
        return
    if done == 0 or (done == 1 and total > 1):
        print("restoring", flush=True)
    time.sleep(0.002)


async def main(file: str, url: str) -> None:
    sqlite_backup.PAGES = 1
    await restore_backup(file, url, force=True, progress=progress)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
