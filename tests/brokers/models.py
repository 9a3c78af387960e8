"""A read model that notices disorder: per stream, how many events arrived and whether each
came right after the one before (version = last + 1)."""

from __future__ import annotations

from typing import ClassVar

from eskit.projections import ReadModelConnection, SQLProjection, handles
from eskit.store.model import RecordedEvent


class StreamLog(SQLProjection):
    """SQLite flavour (``?`` placeholders)."""

    name = "stream_log"
    mark: ClassVar[str] = "?"
    tables = ("stream_counts", "order_errors")
    schema = (
        "CREATE TABLE {stream_counts} (stream TEXT PRIMARY KEY, version BIGINT NOT NULL,"
        " count BIGINT NOT NULL)",
        "CREATE TABLE {order_errors} (stream TEXT NOT NULL, expected BIGINT, got BIGINT)",
    )

    @handles("Happened")
    def happened(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        m = self.mark
        row = db.execute(
            f"SELECT version FROM {{stream_counts}} WHERE stream = {m}", (event.stream,)
        ).fetchone()
        expected = 0 if row is None else row[0] + 1
        if event.version != expected:
            db.execute(
                f"INSERT INTO {{order_errors}} VALUES ({m}, {m}, {m})",
                (event.stream, expected, event.version),
            )
        db.execute(
            f"INSERT INTO {{stream_counts}} VALUES ({m}, {m}, 1) ON CONFLICT (stream)"
            " DO UPDATE SET version = excluded.version,"
            " count = {stream_counts}.count + 1",
            (event.stream, event.version),
        )


class PgStreamLog(StreamLog):
    """PostgreSQL flavour (``%s`` placeholders)."""

    name = "stream_log"
    mark = "%s"
