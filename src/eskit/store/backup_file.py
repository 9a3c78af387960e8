"""The backup file (``eskit backup``): one backend's copy of a store, sealed with a manifest.

Layout::

    b"ESKIT-BACKUP 1\\n"     the magic line
    payload                  a SQLite database file, or a ``pg_dump --format=custom`` archive
    manifest                 JSON (``Manifest``): the payload's size and SHA-256, the store's
                             head and a digest of every table the payload carries
    32 bytes                 the manifest's SHA-256
    8 bytes                  the manifest's length, big-endian
    b"ESKITEND"              the closing mark

The manifest comes last so the payload streams straight into the file; the closing mark
and the two SHA-256 make a file cut short or altered anywhere (a byte of the payload or
of the manifest) fail ``check`` with a message that says which, before anything is
restored.

Table digests are order-free (the sum of a 128-bit hash of each row, modulo 2**128), so a
backend computes them in one pass over each table, without sorting, in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Final, Literal

import msgspec

from eskit.errors import StoreError

MAGIC: Final = b"ESKIT-BACKUP 1\n"
END: Final = b"ESKITEND"
TRAILER: Final = 32 + 8 + len(END)
"""The manifest's SHA-256, its length and the closing mark."""
FORMAT: Final = 1
CHUNK: Final = 1024 * 1024
"""Bytes copied or hashed per read: memory stays bounded whatever the size of the store."""

Progress = Callable[[int, int], None]
"""Called with (done, total) as a phase advances."""


class BackupError(StoreError):
    """A backup file is not whole or does not match, or a restore was refused."""


class TableDigest(msgspec.Struct, frozen=True):
    """A table's row count and order-free digest (hex)."""

    rows: int
    digest: str


class Snapshot(msgspec.Struct, frozen=True):
    """What a backend's copy holds, measured in the copy itself: the log's head (its last
    position), the number of events, and every table's digest."""

    head: int
    events: int
    tables: dict[str, TableDigest]
    schema: str | None = None
    """The PostgreSQL schema the copy was taken from (None for SQLite)."""


class Manifest(msgspec.Struct, frozen=True):
    """The closing record of a backup file."""

    format: int
    eskit: str
    backend: Literal["sqlite", "postgresql"]
    created_at: dt.datetime
    snapshot: Snapshot
    payload_size: int
    payload_sha256: str
    keys: dict[str, int] | None = None
    """Subject keys per master key id in the key store given to ``backup`` (no key
    material: the keys stay out of event-store backups), or None."""


class RowDigest:
    """The order-free digest of a table, a row at a time."""

    MODULUS: Final = 1 << 128

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, encoded: bytes) -> None:
        self.rows += 1
        row = hashlib.blake2b(encoded, digest_size=16).digest()
        self.total = (self.total + int.from_bytes(row, "big")) % self.MODULUS

    def result(self) -> TableDigest:
        return TableDigest(self.rows, f"{self.total:032x}")


def differences(expected: dict[str, TableDigest], found: dict[str, TableDigest]) -> list[str]:
    """What differs between two sets of table digests, one line per table (empty: equal)."""
    lines = []
    for name in sorted(expected.keys() | found.keys()):
        want, got = expected.get(name), found.get(name)
        if got is None:
            lines.append(f"table {name} is missing")
        elif want is None:
            lines.append(f"table {name} is not in the backup")
        elif want != got:
            lines.append(
                f"table {name} differs: {got.rows} rows, digest {got.digest};"
                f" the backup has {want.rows} rows, digest {want.digest}"
            )
    return lines


def write(
    path: Path,
    payload: Path,
    manifest: Callable[[int, str], Manifest],
    progress: Progress | None = None,
) -> Manifest:
    """Write the backup file at ``path`` from the ``payload`` file; ``manifest`` makes the
    manifest from the payload's size and SHA-256. The file appears only when whole and
    synced: it is written beside and renamed."""
    partial = path.with_name(path.name + ".partial")
    total = payload.stat().st_size
    sha = hashlib.sha256()
    try:
        with partial.open("wb") as out, payload.open("rb") as source:
            out.write(MAGIC)
            done = 0
            for chunk in _chunks(source):
                sha.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if done != total:
                raise BackupError(f"{payload} changed while it was copied into {path}")
            sealed = manifest(done, sha.hexdigest())
            encoded = msgspec.json.encode(sealed)
            out.write(encoded)
            out.write(hashlib.sha256(encoded).digest())
            out.write(len(encoded).to_bytes(8, "big"))
            out.write(END)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        _sync_folder(path.parent)
    finally:
        partial.unlink(missing_ok=True)
    return sealed


def check(path: Path, progress: Progress | None = None) -> Manifest:
    """Read and check a backup file: its magic line, closing mark, manifest, and the size
    and SHA-256 of its payload. Raises ``BackupError`` saying what is wrong."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupError(f"no such backup file: {path}") from None
    with path.open("rb") as file:
        if file.read(len(MAGIC)) != MAGIC:
            raise BackupError(f"{path} is not an eskit backup (it does not start as one)")
        manifest, start, end = _manifest(path, file, size)
        file.seek(start)
        sha, done = hashlib.sha256(), 0
        for chunk in _chunks(file, end - start):
            sha.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, end - start)
    if sha.hexdigest() != manifest.payload_sha256:
        raise BackupError(
            f"{path} is corrupted: its payload's SHA-256 is {sha.hexdigest()}, the manifest"
            f" says {manifest.payload_sha256}"
        )
    return manifest


def extract(path: Path, target: Path, progress: Progress | None = None) -> None:
    """Copy a checked backup file's payload to ``target``."""
    with path.open("rb") as file:
        _, start, end = _manifest(path, file, path.stat().st_size)
        file.seek(start)
        with target.open("wb") as out:
            done = 0
            for chunk in _chunks(file, end - start):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, end - start)
            out.flush()
            os.fsync(out.fileno())


def _manifest(path: Path, file: BinaryIO, size: int) -> tuple[Manifest, int, int]:
    """The manifest, and where the payload starts and ends."""
    short = f"{path} is cut short: the closing manifest is missing (an unfinished copy?)"
    if size < len(MAGIC) + TRAILER:
        raise BackupError(short)
    file.seek(size - TRAILER)
    tail = file.read(TRAILER)
    if tail[40:] != END:
        raise BackupError(short)
    length = int.from_bytes(tail[32:40], "big")
    end = size - TRAILER - length
    if length <= 0 or end < len(MAGIC):
        raise BackupError(f"{path} is corrupted: its manifest's length ({length}) is wrong")
    file.seek(end)
    encoded = file.read(length)
    if hashlib.sha256(encoded).digest() != tail[:32]:
        raise BackupError(f"{path} is corrupted: its manifest does not match its SHA-256")
    try:
        manifest = msgspec.json.decode(encoded, type=Manifest)
    except msgspec.DecodeError as error:
        raise BackupError(f"{path} is corrupted: its manifest is unreadable ({error})") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{path} has backup format {manifest.format}; this eskit reads {FORMAT}")
    if manifest.payload_size != end - len(MAGIC):
        raise BackupError(
            f"{path} is corrupted: its payload has {end - len(MAGIC)} bytes, the manifest says"
            f" {manifest.payload_size}"
        )
    return manifest, len(MAGIC), end


def _chunks(file: BinaryIO, limit: int | None = None) -> Iterable[bytes]:
    left = limit
    while left is None or left > 0:
        chunk = file.read(CHUNK if left is None else min(CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX: the folder's entry is synced too)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
