"""Backup and restore of a whole store (``eskit.store.backup``) on SQLite and PostgreSQL:
how long each takes, how big the file is, and what a backup running all the time costs
the appends going on meanwhile.

    .venv/bin/python -m benchmarks.backup                       # 200,000 events
    .venv/bin/python -m benchmarks.backup --events 50000 --only sqlite

For each backend: fill a store (~200 bytes of JSON per event, 100 events per stream,
appended by eskit), back it up, restore it into a new store (digests and ``verify``
included), then measure appends/s of eight writers (single-event appends, group
committed) for ``--seconds``, alternately without and with backups running back to back
in the same process, best of ``--repeat``: the ratio compares figures of the same run.
Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path

import eskit
from benchmarks.common import payloads
from eskit.store.backup import backup, restore_backup

PER_STREAM = 100
SERVER = "postgresql://postgres@127.0.0.1:5432/test"


WRITERS = 8


async def appends_per_second(store: eskit.EventStore, seconds: float) -> float:
    """Single-event appends/s of ``WRITERS`` tasks appending back to back (group commit)."""
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def writer(n: int) -> int:
        written = 0
        while time.perf_counter() < deadline:
            await store.append(f"live-{n}", [eskit.NewEvent("Tick", {"n": written})])
            written += 1
        return written

    counts = await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return sum(counts) / (time.perf_counter() - started)


async def backups_until(store: eskit.EventStore, folder: Path, stop: asyncio.Event) -> int:
    taken = 0
    while not stop.is_set():
        await backup(store, folder / "loop.backup")
        taken += 1
    return taken


async def measure(name: str, url: str, target: str, folder: Path, args: argparse.Namespace) -> None:
    file = folder / f"{name}.backup"
    async with eskit.open_store(url) as store:
        items = payloads(args.events)
        for start in range(0, args.events, PER_STREAM):
            part = items[start : start + PER_STREAM]
            await store.append(
                f"invoice-{start // PER_STREAM}",
                [eskit.NewEvent("InvoiceIssued", d, m) for d, m in part],
            )
        started = time.perf_counter()
        manifest = await backup(store, file)
        took_backup = time.perf_counter() - started
        without, with_backup, taken = [], [], 0
        for _ in range(args.repeat):
            without.append(await appends_per_second(store, args.seconds))
            stop = asyncio.Event()
            loop = asyncio.create_task(backups_until(store, folder, stop))
            await asyncio.sleep(0.05)
            with_backup.append(await appends_per_second(store, args.seconds))
            stop.set()
            taken += await loop
    started = time.perf_counter()
    restored = await restore_backup(file, target)
    took_restore = time.perf_counter() - started
    assert restored.report.ok
    best_without, best_with = max(without), max(with_backup)
    print(
        f"{name}: {manifest.snapshot.events:,} events, backup file"
        f" {file.stat().st_size / 1e6:.1f} MB; backup {took_backup:.2f} s, restore (with"
        f" digests and verify) {took_restore:.2f} s; appends/s without a backup"
        f" {best_without:,.0f}, during backups {best_with:,.0f} (ratio"
        f" {best_with / best_without:.2f}, {taken} backups taken meanwhile)",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        folder = Path(scratch)
        if "sqlite" in args.only:
            source = folder / "source.db"
            await measure(
                "sqlite", f"sqlite:///{source}", f"sqlite:///{folder}/target.db", folder, args
            )
        if "postgresql" in args.only:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            try:
                await measure(
                    "postgresql",
                    f"{args.postgres}?schema={schema}",
                    f"{args.postgres}?schema={schema}_restored",
                    folder,
                    args,
                )
            finally:
                import psycopg

                with (
                    contextlib.suppress(psycopg.Error),
                    psycopg.connect(args.postgres, autocommit=True) as conn,
                ):
                    for name in (schema, f"{schema}_restored"):
                        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=SERVER)
    parser.add_argument("--dir", default=None)
    asyncio.run(main(parser.parse_args()))
