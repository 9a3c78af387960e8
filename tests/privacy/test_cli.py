"""``eskit forget`` and ``eskit keys`` on real files: forget records and masks, rotation
re-wraps with the new master key, and mistakes are one clear error line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

import eskit
from eskit.application import Repository
from eskit.cli.app import app
from eskit.domain.redaction import REDACTED
from eskit.privacy import FORGOTTEN, FORGOTTEN_STREAM, Keyring, MasterKey, open_keystore
from tests.cli.conftest import invoke
from tests.privacy import events as examples
from tests.privacy.reader import reader_holding


@pytest.fixture
def files(tmp_path: Path, master: MasterKey) -> tuple[str, str]:
    """A store with two customers' encrypted events and its key store file."""
    url, keys = f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"

    async def fill() -> None:
        keyring = Keyring(open_keystore(keys), master)
        events = examples.registry()
        events.encrypt_with(keyring)
        async with eskit.open_store(url) as store:
            customers = Repository(store, events, examples.Customer.model())
            for customer_id in ("c-1", "c-2"):
                await customers.save(
                    customer_id, [examples.CustomerRenamed(f"{customer_id} name")], eskit.NO_STREAM
                )
        keyring.close()

    asyncio.run(fill())
    return url, keys


def names(url: str, keys: str, master: MasterKey) -> list[str]:
    async def read() -> list[str]:
        keyring = Keyring(open_keystore(keys), master)
        events = examples.registry()
        events.encrypt_with(keyring)
        try:
            async with eskit.open_store(url) as store:
                return [
                    e.name
                    async for r in store.read_all(category="customer")
                    for e in events.decode(r)
                ]
        finally:
            keyring.close()

    return asyncio.run(read())


def test_forget_deletes_the_key_and_records_it(files: tuple[str, str], master: MasterKey) -> None:
    url, keys = files
    result = invoke(["forget", url, "c-1", "--keys", keys, "--by", "dpo", "--reason", "r-42", "-y"])
    assert result.exit_code == 0, result.output
    assert (
        "subject c-1 forgotten; recorded at position 3 in stream privacy-forgotten" in result.output
    )
    assert names(url, keys, master) == [FORGOTTEN, "c-2 name"]

    async def record() -> eskit.RecordedEvent:
        async with eskit.open_store(url) as store:
            return await anext(aiter(store.read_stream(FORGOTTEN_STREAM)))

    assert asyncio.run(record()).data["by"] == "dpo"


def test_forget_asks_before_deleting(files: tuple[str, str], master: MasterKey) -> None:
    url, keys = files
    result = invoke(["forget", url, "c-1", "--keys", keys], input="n\n")
    assert result.exit_code == 1
    assert names(url, keys, master) == ["c-1 name", "c-2 name"]


def test_forget_refuses_the_event_store_as_key_store(files: tuple[str, str]) -> None:
    url, _ = files
    result = invoke(["forget", url, "c-1", "--keys", url, "-y"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the key store must not be the event store: give --keys its own URL"
    )


def test_forget_from_a_mistyped_event_store_creates_nothing(
    files: tuple[str, str], tmp_path: Path
) -> None:
    """The event store is checked before the key store is opened: neither a store nor a
    key store file is left behind, whether the key store exists or not."""
    _, keys = files
    before = sorted(tmp_path.rglob("*")), (tmp_path / "keys.db").read_bytes()
    typo = tmp_path / "typo.db"
    for keys_url in (keys, f"sqlite:///{tmp_path}/new/keys.db"):
        result = invoke(["forget", f"sqlite:///{typo}", "c-1", "--keys", keys_url, "-y"])
        assert result.exit_code == 1
        assert result.stderr.strip() == f"error: no such store: {typo}"
        assert (sorted(tmp_path.rglob("*")), (tmp_path / "keys.db").read_bytes()) == before


def test_forget_from_a_missing_key_store_is_an_error_naming_it(
    files: tuple[str, str], master: MasterKey, tmp_path: Path
) -> None:
    """Forgetting from a key store that is not there: nothing to forget, and nothing is
    created (an empty key store would answer that no subject has a key)."""
    url, keys = files
    before = sorted(tmp_path.rglob("*"))
    typo, empty = tmp_path / "kyes.db", tmp_path / "empty.db"
    empty.touch()
    cases = {typo: "no such file", empty: "the file is no key store"}
    for path, why in cases.items():
        result = invoke(["forget", url, "c-1", "--keys", f"sqlite:///{path}", "-y"])
        assert result.exit_code == 1
        assert result.stderr.strip() == f"error: no such key store: {path} ({why})"
    assert sorted(tmp_path.rglob("*")) == sorted([*before, empty])
    assert names(url, keys, master) == ["c-1 name", "c-2 name"]  # nothing forgotten


def test_keys_commands_on_a_missing_key_store_create_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "keys.db"
    (tmp_path / "new.key").write_text(MasterKey.generate().text())
    rotate = ["keys", "rotate", f"sqlite:///{typo}", "--master-key-file", f"{tmp_path}/new.key"]
    for args in (["keys", "status", f"sqlite:///{typo}"], rotate):
        result = invoke(args)
        assert result.exit_code == 1, args
        assert result.stderr.strip() == f"error: no such key store: {typo} (no such file)"
    assert [p.name for p in tmp_path.iterdir()] == ["new.key"]


def test_rotate_rewraps_with_the_new_master_key(
    files: tuple[str, str], master: MasterKey, tmp_path: Path
) -> None:
    url, keys = files
    new = MasterKey.generate()
    (tmp_path / "new.key").write_text(new.text())
    (tmp_path / "old.key").write_text(master.text())
    result = invoke(
        [
            *("keys", "rotate", keys, "--master-key-file", str(tmp_path / "new.key")),
            *("--previous-key-file", str(tmp_path / "old.key")),
        ]
    )
    assert result.exit_code == 0, result.output
    assert f"2 subject keys re-wrapped with master key {new.id}" in result.output
    assert names(url, keys, new) == ["c-1 name", "c-2 name"]

    status = invoke(["keys", "status", keys])
    assert status.exit_code == 0
    assert new.id in status.output
    assert master.id not in status.output
    listed = invoke(["keys", "status", keys, "--json"])
    assert listed.stdout == f'{{"master_key_id":"{new.id}","subject_keys":2}}\n'


def test_rotate_without_the_old_key_says_which_it_needs(
    files: tuple[str, str], master: MasterKey, tmp_path: Path
) -> None:
    _, keys = files
    (tmp_path / "new.key").write_text(MasterKey.generate().text())
    result = invoke(["keys", "rotate", keys, "--master-key-file", str(tmp_path / "new.key")])
    assert result.exit_code == 1
    assert f"wrapped by master key {master.id}, which this keyring does not have" in result.stderr


def test_generate_prints_a_usable_master_key() -> None:
    result = invoke(["keys", "generate"])
    assert result.exit_code == 0
    assert len(MasterKey.from_text(result.stdout).secret) == 32


def test_forget_of_an_unknown_subject_says_so_and_fails(files: tuple[str, str]) -> None:
    url, keys = files
    result = invoke(["forget", url, "nobody", "--keys", keys, "--by", "dpo", "-y"])
    assert result.exit_code == 1
    assert "forgotten;" not in result.output
    assert "error: no such subject: 'nobody' has no key in the key store" in result.stderr


def test_forget_fails_while_another_process_keeps_the_key_readable(
    files: tuple[str, str], master: MasterKey, tmp_path: Path
) -> None:
    url, keys = files
    bounded = f"{keys}?forget_timeout=0.5"
    with reader_holding(tmp_path / "keys.db"):
        held = invoke(["forget", url, "c-1", "--keys", bounded, "--by", "dpo", "-y"])
    assert held.exit_code == 1
    assert "forgotten;" not in held.output
    assert "a copy stays in" in held.stderr
    assert "end it (stop or restart the processes that use the key store)" in held.stderr
    assert "run forget again" in held.stderr

    done = invoke(["forget", url, "c-1", "--keys", bounded, "--by", "dpo", "-y"])
    assert done.exit_code == 0, done.output
    assert "subject c-1 forgotten" in done.output
    assert names(url, keys, master) == [FORGOTTEN, "c-2 name"]


def test_a_failing_rebuild_says_why_without_the_decrypted_value(
    files: tuple[str, str], master: MasterKey
) -> None:
    url, keys = files
    result = CliRunner().invoke(
        app,
        ["projections", "rebuild", url, "names", "--app", "tests.privacy.failing:projections"],
        env={"COLUMNS": "200", "ESKIT_KEYS": keys, "ESKIT_MASTER_KEY": master.text()},
    )
    assert result.exit_code == 1
    assert f"error: rebuilding names failed: KeyError: '{REDACTED}'" in result.stderr
    assert "c-1 name" not in result.output
