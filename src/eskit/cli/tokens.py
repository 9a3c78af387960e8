"""``eskit tokens``: create, list and revoke the API's bearer tokens (the file keeps only
their SHA-256)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import err, fail, out, when
from eskit.cli.records import AsJson, Column, show_records
from eskit.web.tokens import TokenFile

app = typer.Typer(
    help="Manage the HTTP API's bearer tokens.\n\n"
    "Example: eskit tokens create ci --scope write:invoice --file tokens.json",
    no_args_is_help=True,
)

File = Annotated[Path, typer.Option("--file", "-f", help="The token file (JSON, hashes only).")]
Name = Annotated[str, typer.Argument(help="A name for the token: who or what uses it.")]


@app.command()
def create(
    name: Name,
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            help="read, write or admin, optionally for one category: write:invoice (repeat).",
            show_default=False,
        ),
    ],
    file: File = Path("tokens.json"),
) -> None:
    """Create a token and print it once (only its hash is kept).

    Example: eskit tokens create billing-ui --scope write:invoice --scope read --file tokens.json
    """
    try:
        token = TokenFile(file).create(name, scope)
    except (ValueError, OSError) as error:
        fail(str(error))
    err().print(
        Text(f"token {name} ({', '.join(sorted(set(scope)))}) added to {file}; it is shown once:"),
        soft_wrap=True,
    )
    print(token)


@app.command("list")
def list_tokens(file: File = Path("tokens.json"), as_json: AsJson = False) -> None:
    """List the tokens: name, scopes, creation time and the start of the hash.

    Example: eskit tokens list --file tokens.json
    """
    try:
        records = TokenFile(file).read()
    except (ValueError, OSError) as error:
        fail(str(error))
    if not records and not as_json:
        out().print(Text(f"no tokens in {file}"))
        return
    rows = [
        {
            "name": record.name,
            "scopes": " ".join(record.scopes),
            "created": record.created_at,
            "sha256": record.sha256[:12],  # the start, enough to tell tokens apart
        }
        for record in records
    ]
    show_records(TOKEN_COLUMNS, rows, title=f"tokens in {file}", as_json=as_json)


TOKEN_COLUMNS = (
    Column("name", names=True),
    Column("scopes", names=True),
    Column("created", shown=when),
    Column("sha256", shown=lambda start: f"{start}…"),
)


@app.command()
def revoke(name: Name, file: File = Path("tokens.json")) -> None:
    """Revoke a token: a running server refuses it within a second.

    Example: eskit tokens revoke billing-ui --file tokens.json
    """
    try:
        TokenFile(file).revoke(name)
    except (ValueError, OSError) as error:
        fail(str(error))
    out().print(Text(f"token {name} revoked"))
