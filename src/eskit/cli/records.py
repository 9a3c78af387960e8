"""Records on stdout, as a table for people or, with ``--json``, one JSON object per line for
scripts: the one place every listing and status command renders through."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table
from rich.text import Text

from eskit.cli.common import out

AsJson = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per line on stdout (for scripts), no table."),
]


@dataclass(frozen=True)
class Column:
    """A column of records: ``key`` in the JSON objects, ``header`` in the table.

    ``names`` a record: never cut, folded onto more lines when narrow. ``optional``: left out
    of the table (not the JSON) when empty in every row; ``in_table=False``: always (a
    detail for scripts the table has no room for). ``shown`` turns the value into the cell
    text; ``style`` colours it."""

    key: str
    header: str = ""
    right: bool = False
    names: bool = False
    optional: bool = False
    in_table: bool = True
    shown: Callable[[Any], str] | None = None
    style: Callable[[Any], str] | None = None

    @property
    def min_width(self) -> int | None:
        """A name keeps room for its header's longest word; the other columns give way."""
        if not self.names:
            return None
        return max(len(word) for word in (self.header or self.key).replace("_", " ").split())

    def text(self, value: object) -> Text:
        """The cell showing ``value`` literally (names may hold rich markup like ``[b]``)."""
        if value is None:
            return Text("")
        shown = self.shown(value) if self.shown is not None else str(value)
        return Text(shown, style=self.style(value) if self.style is not None else "")


Record = Mapping[str, object]


def show_records(
    columns: Sequence[Column], records: Sequence[Record], *, title: str, as_json: bool
) -> None:
    """Print ``records``: one JSON object per line (every column, raw values), or a table
    that stays readable at 80 columns and through a pipe."""
    if as_json:
        for record in records:
            typer.echo(msgspec.json.encode({c.key: record.get(c.key) for c in columns}).decode())
        return
    shown = [
        c
        for c in columns
        if c.in_table and (not c.optional or any(_filled(r.get(c.key)) for r in records))
    ]
    table = Table()
    for column in shown:
        table.add_column(
            column.header or column.key.replace("_", " "),
            justify="right" if column.right else "left",
            overflow="fold",
            no_wrap=False,
            min_width=column.min_width,
        )
    for record in records:
        table.add_row(*(column.text(record.get(column.key)) for column in shown))
    console = out()
    console.print(Text(title, style="italic", overflow="fold"))  # the terminal's width
    console.print(table)


def _filled(value: object) -> bool:
    return value not in (None, "", 0)
