"""``eskit forget`` and ``eskit keys``: crypto-shredding from the command line.

Thin shells over ``eskit.privacy``: ``forget`` deletes a data subject's key and records it;
``keys rotate`` re-wraps every subject key with a new master key; ``keys generate`` makes a
master key; ``keys status`` shows which master keys wrap how many subject keys.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from eskit.cli.common import Url, fail, opened, out, run
from eskit.cli.records import AsJson, Column, show_records
from eskit.errors import EskitError
from eskit.store.model import AppendResult

if TYPE_CHECKING:  # eskit.privacy needs cryptography: imported when a command runs
    from eskit.privacy import Keyring, KeyStore

app = typer.Typer(
    help="Manage the keys of encrypted fields.\n\nExample: eskit keys generate > master.key",
    no_args_is_help=True,
)

KeysUrl = Annotated[
    str,
    typer.Option(
        "--keys",
        envvar="ESKIT_KEYS",
        help="Key store URL, e.g. sqlite:///./keys.db (or $ESKIT_KEYS).",
        show_default=False,
    ),
]
KeysArgument = Annotated[
    str, typer.Argument(help="Key store URL, e.g. sqlite:///./keys.db", show_default=False)
]


def forget_command(
    url: Url,
    subject: Annotated[str, typer.Argument(help="The data subject's id.", show_default=False)],
    keys: KeysUrl,
    by: Annotated[
        str, typer.Option(help="Who asked (kept in the record).", show_default=False)
    ] = "",
    reason: Annotated[
        str | None, typer.Option(help="Why (kept in the record; no personal data).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget a data subject: delete its key, so its encrypted fields read as masks for good.

    Records a SubjectForgotten event in the privacy-forgotten stream. Cannot be undone.
    Exits 1 for a store or key store that does not exist (nothing is created), for a
    subject that has no key and was never forgotten, and when another process kept a copy
    of the key readable (run it again once that process is gone).

    Example: eskit forget sqlite:///./events.db c-7 --keys sqlite:///./keys.db --by dpo --yes
    """
    if keys == url:
        fail("the key store must not be the event store: give --keys its own URL")
    if not yes:
        typer.confirm(
            f"Delete every key of subject {subject!r}? Its encrypted fields become unreadable"
            " for good",
            abort=True,
        )
    result = run(_forget(url, keys, subject, by or getpass.getuser(), reason))
    out().print(
        Text(
            f"subject {subject} forgotten; recorded at position {result.last_position}"
            " in stream privacy-forgotten"
        ),
        soft_wrap=True,
    )


async def _forget(
    url: str, keys_url: str, subject: str, by: str, reason: str | None
) -> AppendResult:
    """Forget ``subject`` once both stores are found: the event store first, so that a
    mistyped one leaves nothing behind, then the key store (never created here either)."""
    async with opened(url, create=False) as store:
        with keystore_at(keys_url) as keys:
            from eskit.privacy import forget

            return await forget(store, keys, subject, by=by, reason=reason)


@app.command()
def generate() -> None:
    """Print a new random master key (base64) for ESKIT_MASTER_KEY or a key file.

    Example: eskit keys generate > master.key
    """
    from eskit.privacy import MasterKey

    print(MasterKey.generate().text())


@app.command()
def rotate(
    keys: KeysArgument,
    master_key_file: Annotated[
        Path | None,
        typer.Option(help="The new master key (default: $ESKIT_MASTER_KEY[_FILE])."),
    ] = None,
    previous_key_file: Annotated[
        list[Path] | None,
        typer.Option(help="An earlier master key (repeat; default: $ESKIT_PREVIOUS_MASTER_KEYS)."),
    ] = None,
) -> None:
    """Re-wrap every subject key with the new master key; events are not touched.

    Keys wrapped by an earlier master key need it: --previous-key-file, or
    $ESKIT_PREVIOUS_MASTER_KEYS.

    Example: eskit keys rotate sqlite:///./keys.db --master-key-file new.key
    """
    with keystore_at(keys) as store:
        keyring = _keyring(store, master_key_file, previous_key_file)
        try:
            count = keyring.rotate()
        except EskitError as error:
            fail(str(error))
    out().print(Text(f"{count} subject keys re-wrapped with master key {keyring.master.id}"))


@app.command()
def status(keys: KeysArgument, as_json: AsJson = False) -> None:
    """Show how many subject keys each master key wraps (to follow a rotation).

    Example: eskit keys status sqlite:///./keys.db
    """
    with keystore_at(keys) as store:
        counts = store.count_by_master()
    records = [{"master_key_id": m, "subject_keys": n} for m, n in sorted(counts.items())]
    show_records(KEY_COLUMNS, records, title=f"subject keys in {keys}", as_json=as_json)


KEY_COLUMNS = (Column("master_key_id", names=True), Column("subject_keys", right=True))


def _keyring(
    store: KeyStore, master_file: Path | None, previous_files: list[Path] | None
) -> Keyring:
    from eskit.privacy import Keyring, MasterKey

    try:
        master = MasterKey.from_file(master_file) if master_file else MasterKey.from_env()
        previous = (
            [MasterKey.from_file(path) for path in previous_files]
            if previous_files
            else MasterKey.previous_from_env()
        )
    except (EskitError, ValueError, OSError) as error:
        fail(str(error))
    return Keyring(store, master, previous=previous)


@contextlib.contextmanager
def keystore_at(url: str) -> Iterator[KeyStore]:
    """The key store at ``url``, which must exist: these commands work on the keys that are
    there, so a mistyped URL is ``no such key store: PATH`` and creates nothing."""
    try:
        from eskit.privacy import open_keystore
    except ImportError as error:
        fail(f"encrypted fields need the cryptography package (pip install 'eskit[ops]'): {error}")
    try:
        store = open_keystore(url, create=False)
    except (ValueError, OSError, EskitError) as error:
        fail(str(error))
    try:
        yield store
    finally:
        store.close()
