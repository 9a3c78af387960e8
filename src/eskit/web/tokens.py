"""Bearer tokens and what they may do, kept in a JSON file that holds only their hashes.

A token is shown once, when it is created; the file keeps its SHA-256, its name and its
scopes, so a leaked file lets nobody in. Scopes are ``read``, ``write`` and ``admin``
(admin implies every other), optionally limited to one stream category: ``write:invoice``
may append to and send commands for ``invoice-*`` streams only.

The server re-reads the file when it changes, so ``eskit tokens revoke`` takes effect
without a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal, TypeAlias

import msgspec

from eskit.store import rules

Action: TypeAlias = Literal["read", "write"]
ACTIONS: Final = ("read", "write", "admin")
PREFIX: Final = "eskit_"
"""Every token starts with it, so secret scanners and people recognise one."""
RELOAD_EVERY: Final = 1.0
"""Seconds between checks whether the token file changed."""


class TokenRecord(msgspec.Struct, frozen=True):
    """A token as the file stores it: never the token itself."""

    name: str
    sha256: str
    scopes: list[str]
    created_at: dt.datetime


class TokenFileContent(msgspec.Struct, frozen=True):
    tokens: list[TokenRecord] = []
    version: int = 1


def digest(token: str) -> str:
    """The SHA-256 of a token, hex: what the file stores and requests are checked against."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_scope(scope: str) -> str:
    """Return ``scope`` if it is ``read``, ``write`` or ``admin``, or ``read:<category>`` /
    ``write:<category>``; raise ``ValueError`` otherwise."""
    action, _, category = scope.partition(":")
    if action not in ACTIONS:
        raise ValueError(f"scope {scope!r}: must start with read, write or admin")
    if not category:
        if scope.endswith(":"):
            raise ValueError(f"scope {scope!r}: the category after ':' is missing")
        return scope
    if action == "admin":
        raise ValueError(f"scope {scope!r}: admin covers every category; give just 'admin'")
    rules.check_name(category, "category")
    if "-" in category:
        raise ValueError(f"scope {scope!r}: a category is the part of a stream name before '-'")
    return scope


class Grant:
    """What one token may do: ``allows("write", "invoice")``."""

    def __init__(self, name: str, scopes: Iterable[str]) -> None:
        self.name = name
        self.scopes = frozenset(scopes)
        self.admin = "admin" in self.scopes

    def allows(self, action: Action, category: str | None = None) -> bool:
        """Whether the token may ``action`` on ``category`` (None: on every category)."""
        if self.admin or action in self.scopes:
            return True
        return category is not None and f"{action}:{category}" in self.scopes

    def allows_some(self, action: Action) -> bool:
        """Whether the token may ``action`` on at least one category."""
        return self.admin or any(s.partition(":")[0] == action for s in self.scopes)

    def categories(self, action: Action) -> list[str]:
        """The categories a category-limited token may ``action`` on (for messages)."""
        return sorted(s.partition(":")[2] for s in self.scopes if s.startswith(f"{action}:"))


class TokenSet:
    """Tokens by hash; ``grant(token)`` says what a presented token may do."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._by_hash = {r.sha256: Grant(r.name, r.scopes) for r in records}

    def grant(self, token: str) -> Grant | None:
        """The grant of ``token``, or None if it is not one of these tokens."""
        return self._by_hash.get(digest(token))

    def __len__(self) -> int:
        return len(self._by_hash)


class TokenFile:
    """The token file at ``path``: create, list and revoke tokens; serve its current set."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._set = TokenSet()
        self._stamp: tuple[int, int] | None = None
        self._checked = -RELOAD_EVERY

    def read(self) -> list[TokenRecord]:
        """The tokens in the file; none if the file does not exist yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return msgspec.json.decode(raw, type=TokenFileContent).tokens
        except msgspec.DecodeError as error:
            raise ValueError(f"token file {self.path} is not valid: {error}") from None

    def create(self, name: str, scopes: Iterable[str]) -> str:
        """Add a token called ``name`` with ``scopes``; return the token (it is not stored)."""
        rules.check_name(name, "token name")
        checked = sorted({check_scope(s) for s in scopes})
        if not checked:
            raise ValueError("a token needs at least one scope (read, write, admin, write:invoice)")
        records = self.read()
        if any(r.name == name for r in records):
            raise ValueError(f"a token named {name!r} already exists in {self.path}")
        token = PREFIX + secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self._write([*records, TokenRecord(name, digest(token), checked, now)])
        return token

    def revoke(self, name: str) -> None:
        """Remove the token called ``name``; ``ValueError`` if there is none."""
        records = self.read()
        kept = [r for r in records if r.name != name]
        if len(kept) == len(records):
            raise ValueError(f"no token named {name!r} in {self.path}")
        self._write(kept)

    def current(self) -> TokenSet:
        """The tokens as the file holds them now (re-read at most every ``RELOAD_EVERY``
        seconds, when its size or modification time changed)."""
        now = time.monotonic()
        if now - self._checked >= RELOAD_EVERY:
            self._checked = now
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                stamp = (0, 0)
            if stamp != self._stamp:
                self._set, self._stamp = TokenSet(self.read()), stamp
        return self._set

    def _write(self, records: list[TokenRecord]) -> None:
        """Replace the file atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = msgspec.json.format(msgspec.json.encode(TokenFileContent(records)))
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(content + b"\n")
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
