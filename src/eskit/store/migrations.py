"""The schema migrations shipped with eskit: one folder of ``NNN_name.sql`` files per backend
(``postgres_migrations``, ``sqlite_migrations``), each file one version, applied once, in
order, by that backend's schema module."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
from typing import Final, NamedTuple

_FILE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


class Migrated(NamedTuple):
    """What ``EventStore.migrate`` did."""

    where: str
    """The schema (``schema NAME``) or the file migrated, as messages name it."""
    applied: list[tuple[int, str, dt.datetime | None]]
    """The migrations applied now: version, name and when (None: the store records no time)."""
    version: int
    """The schema's version now."""
    role_created: bool = False
    """Whether ``app_role`` was created (False: it existed, or none was asked for)."""


def load(folder: str) -> list[Migration]:
    """The migrations in ``eskit/store/<folder>``, in version order."""
    found = []
    for entry in importlib.resources.files("eskit.store").joinpath(folder).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found)


def newest(migrations: list[Migration]) -> int:
    """The version a schema has once every migration is applied (0: none)."""
    return max((m.version for m in migrations), default=0)
