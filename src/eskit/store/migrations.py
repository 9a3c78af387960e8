"""The schema migrations shipped with eskit: one folder of ``NNN_name.sql`` files per backend
(``postgres_migrations``, ``sqlite_migrations``), each file one version, applied once, in
order, by that backend's schema module."""

from __future__ import annotations

import importlib.resources
import re
from typing import Final, NamedTuple

_FILE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


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
