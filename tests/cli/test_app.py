"""The CLI: every command documented with an example, and each one works on a real store."""

from __future__ import annotations

from collections.abc import Iterator

import typer.core
import typer.main

from eskit.cli import app
from tests.cli.conftest import invoke


def leaves(group: typer.core.TyperGroup, path: str = "eskit") -> Iterator[tuple[str, str]]:
    """Every command under ``group``, nested groups walked, as (full name, help)."""
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            yield from leaves(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command.help or ""


def test_every_command_has_an_example_in_its_help() -> None:
    commands = dict(leaves(typer.main.get_group(app)))
    assert {"eskit info", "eskit streams list", "eskit projections run"} <= set(commands)
    for name, help_text in commands.items():
        assert f"Example: {name} " in help_text, f"`{name}` has no example of itself"


def test_info_shows_the_last_position(url: str) -> None:
    result = invoke(["info", url])
    assert result.exit_code == 0, result.output
    assert "5" in result.output


def test_info_rejects_an_unknown_url_clearly() -> None:
    result = invoke(["info", "mysql://nowhere"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unsupported store URL")
    assert len(result.stderr.strip().splitlines()) == 1
