"""Backup and restore of a whole store (``eskit backup``, ``eskit restore-backup``).

A backup is a consistent, online copy of everything in the store's file or schema: the
log, the head, stream metadata and tombstones, snapshots, removals, the chain start, and
what projections keep there (read models, checkpoints, subscription groups). Each backend
copies itself through its ``backup_engine`` (``sqlite_backup``: SQLite's backup API;
``postgres_backup``: ``pg_dump`` from an exported snapshot) and measures the copy: its
head, its events and a digest of every table. The backup file (``backup_file``) seals the
copy with those figures and a SHA-256.

A restore checks the whole file first, refuses a target that holds anything unless
forced, restores in one transaction of the target (killed midway, it leaves the target as
it was), then proves the result: every table's digest equal to the backup's, the same
head and events, and ``verify`` (with the anchors given) finding every chain intact.

Subject keys (``eskit.privacy``) live apart from the store by design and are never put in
its backups; given the key store, a backup records how many keys each master key wraps,
and a restore reports the master keys whose subject keys the key store no longer has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from eskit.store.audit import Anchors, AuditReport, verify
from eskit.store.backup_file import (
    FORMAT,
    BackupError,
    Manifest,
    Progress,
    Snapshot,
    check,
    differences,
    extract,
    write,
)
from eskit.store.base import EventStore

if TYPE_CHECKING:
    from eskit.privacy.keystore import KeyStore

__all__ = [
    "BackupEngine",
    "BackupError",
    "Manifest",
    "Restored",
    "backup",
    "check",
    "restore_backup",
]

Phases = Callable[[str, int, int], None]
"""Called with (phase, done, total): ``copying``, ``writing`` for a backup; ``checking``,
``restoring``, ``verifying`` for a restore."""


class BackupEngine(Protocol):
    """How a backend copies and restores itself (``EventStore.backup_engine``); blocking."""

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]: ...

    @property
    def steps(self) -> str:
        """What the progress of ``copy`` and ``restore`` counts (``pages``...)."""
        ...

    @property
    def scratch(self) -> Path | None:
        """The folder a restore unpacks the copy in (None: the system's temporary one)."""
        ...

    def copy(self, payload: Path, progress: Progress | None = None) -> Snapshot:
        """Copy the store as of one moment into the file ``payload``; measure the copy."""
        ...

    def is_empty(self) -> bool:
        """Whether the store is missing or holds nothing but a new store's bookkeeping."""
        ...

    def restore(
        self, payload: Path, snapshot: Snapshot, force: bool, progress: Progress | None = None
    ) -> None:
        """Restore ``payload`` into the store in one transaction."""
        ...

    def digests(self) -> Snapshot:
        """Measure the store as ``copy`` measures its copy."""
        ...


class Restored(msgspec.Struct):
    """What ``restore_backup`` brought back and proved."""

    manifest: Manifest
    report: AuditReport
    """``verify``'s findings on the restored store (``report.ok``: every chain intact)."""
    keys_missing: list[str] = msgspec.field(default_factory=list)
    """Master key ids the backup's subject keys were wrapped with that the key store
    given has no key for any more (their subjects' data reads masked)."""


async def backup(
    store: EventStore,
    path: str | os.PathLike[str],
    *,
    keys: KeyStore | None = None,
    progress: Phases | None = None,
) -> Manifest:
    """Write a consistent copy of ``store`` (open, and in use if need be) to ``path``.

    The file appears only when whole. Raises ``BackupError`` for a store that cannot be
    backed up (``memory://``) or a copy that failed (nothing is left behind then).
    """
    engine = _engine(store)
    target = Path(path)
    with _scratch(target.parent / f".{target.name}.partial.d") as scratch:
        payload = scratch / "payload"
        snapshot = await asyncio.to_thread(engine.copy, payload, _phase(progress, "copying"))
        counted = None if keys is None else await asyncio.to_thread(keys.count_by_master)

        def manifest(size: int, sha256: str) -> Manifest:
            return Manifest(
                FORMAT,
                _version(),
                engine.backend,
                dt.datetime.now(dt.UTC),
                snapshot,
                size,
                sha256,
                counted,
            )

        return await asyncio.to_thread(
            write, target, payload, manifest, _phase(progress, "writing")
        )


async def restore_backup(
    path: str | os.PathLike[str],
    url: str,
    *,
    force: bool = False,
    anchors: Anchors | None = None,
    keys: KeyStore | None = None,
    progress: Phases | None = None,
) -> Restored:
    """Restore the backup at ``path`` into the store at ``url`` and prove it identical.

    Checks the whole file first; refuses (``BackupError``) a target that holds anything
    but a new store's bookkeeping unless ``force``; restores in one transaction of the
    target. Then compares every table's digest, the head and the number of events with the
    backup's (``BackupError`` if any differs) and runs ``verify`` with ``anchors``: its
    report is in the result, check ``report.ok``. Needs ``ESKIT_AUDIT_KEY`` as the writers
    had it for ``verify``.
    """
    from eskit.store import open_store  # the package imports this module's neighbours

    source = Path(path)
    manifest = await asyncio.to_thread(check, source, _phase(progress, "checking"))
    engine = _engine(open_store(url))
    if engine.backend != manifest.backend:
        raise BackupError(
            f"{source} is a {manifest.backend} backup: it restores into a {manifest.backend}"
            f" store, and {url} is a {engine.backend} one"
        )
    if not force and not await asyncio.to_thread(engine.is_empty):
        raise BackupError(f"{url} is not empty: restoring over it needs force (--force)")
    folder = Path(tempfile.gettempdir()) if engine.scratch is None else engine.scratch
    with _scratch(folder / f".{source.name}.{_tag(source)}.restoring.d") as scratch:
        payload = scratch / "payload"
        await asyncio.to_thread(extract, source, payload)
        await asyncio.to_thread(
            engine.restore, payload, manifest.snapshot, force, _phase(progress, "restoring")
        )
    found = await asyncio.to_thread(engine.digests)
    problems = differences(manifest.snapshot.tables, found.tables)
    for what, want, got in (
        ("head", manifest.snapshot.head, found.head),
        ("events", manifest.snapshot.events, found.events),
    ):
        if want != got:
            problems.append(f"the restored store's {what} is {got}, the backup's {want}")
    if problems:
        raise BackupError(f"{url} does not match {source}: " + "; ".join(problems))
    async with open_store(url, readonly=True) as restored:
        report = await verify(restored, anchors=anchors, progress=_phase(progress, "verifying"))
    missing = []
    if manifest.keys is not None and keys is not None:
        present = await asyncio.to_thread(keys.count_by_master)
        missing = sorted(master for master in manifest.keys if master not in present)
    return Restored(manifest, report, missing)


def _tag(path: Path) -> str:
    """A few characters naming ``path`` wherever it is: restores of two files of the same
    name (from two folders) unpack in two working folders."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _scratch(folder: Path) -> Iterator[Path]:
    """A working folder of a fixed name, held by this run alone and emptied first: what a
    killed run left there is removed by the next run, not left to fill the disk."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _held(folder.with_name(folder.name + ".lock"), folder):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _held(lock: Path, folder: Path) -> Iterator[None]:
    """An exclusive lock on the file ``lock``, or ``BackupError`` at once: a second run using
    ``folder`` would empty it under the first. A killed run's lock dies with its process;
    the file is removed at the end, while still held (a run that opened it meanwhile sees
    that it is gone and takes the new one)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BackupError(
                f"another backup or restore is using {folder}: run one at a time"
            ) from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


def _engine(store: EventStore) -> BackupEngine:
    engine = store.backup_engine()
    if engine is None:
        raise BackupError(
            f"{type(store).__name__} keeps nothing to back up: back up SQLite or PostgreSQL"
            " stores (export copies any store's log)"
        )
    return engine


def _phase(progress: Phases | None, name: str) -> Progress | None:
    if progress is None:
        return None

    def update(done: int, total: int) -> None:
        progress(name, done, total)

    return update


def _version() -> str:
    from eskit import __version__

    return __version__
