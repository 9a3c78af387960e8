"""The CLI: every command documented with an example, and each one works on a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer.main
from typer.testing import CliRunner

import eskit
from eskit.cli import app

runner = CliRunner()


def test_every_command_has_an_example_in_its_help() -> None:
    group = typer.main.get_group(app)
    assert group.commands, "the CLI has no commands"
    for name, command in group.commands.items():
        assert "Example: eskit " in (command.help or ""), f"`eskit {name}` has no example"


def test_info_shows_the_last_position(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"

    async def fill() -> None:
        async with eskit.open_store(url) as store:
            await store.append("invoice-1", [eskit.NewEvent("InvoiceCreated", {})] * 3)

    asyncio.run(fill())
    result = runner.invoke(app, ["info", url])
    assert result.exit_code == 0, result.output
    assert "3" in result.output


def test_info_rejects_an_unknown_url_clearly() -> None:
    result = runner.invoke(app, ["info", "mysql://nowhere"])
    assert result.exit_code == 1
    assert "unsupported store URL" in result.output
