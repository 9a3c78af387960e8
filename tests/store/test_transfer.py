"""Export to JSON Lines and import back: round trips keep every event exactly, imports are
idempotent, and damaged files or disagreeing stores are refused with the line named."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.store.transfer import TransferError, export_events, import_events
from eskit.testing.conformance.helpers import PAYLOADS

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/source.db"
    async with eskit.open_store(url) as store:
        store.page_size = 3  # a few events already span several pages
        yield store


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    async with eskit.open_store(f"sqlite:///{tmp_path}/target.db") as store:
        yield store


FILLED = 2 * len(PAYLOADS) + 5


async def fill(store: eskit.EventStore) -> None:
    """Interleaved streams, all kinds of JSON, metadata, a soft-deleted stream: ``FILLED``
    events."""
    for name, payload in PAYLOADS.items():
        await store.append(f"payload-{name}", [eskit.NewEvent("Held", payload, {"p": name})])
        await store.append("invoice-1", [eskit.NewEvent("Touched", {"by": name})])
    await store.append(
        "invoice-2",
        [eskit.NewEvent("Created", {"n": i}, {"correlation_id": "c"}) for i in range(5)],
    )
    await store.delete_stream("payload-empty")


async def log(store: eskit.EventStore) -> list[tuple[Any, ...]]:
    """The log without what the target assigns itself (positions, times)."""
    return [(e.id, e.stream, e.version, e.type, e.data, e.metadata) async for e in store.read_all()]


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_round_trip_keeps_every_event_and_the_digest(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    exported = await export_events(source, tmp_path / "log.jsonl")
    imported = await import_events(target, tmp_path / "log.jsonl")
    again = await export_events(target, tmp_path / "again.jsonl")

    assert exported.count == await source.last_position() == FILLED
    assert imported == exported == again
    assert await log(target) == await log(source)
    written = lines(tmp_path / "log.jsonl")
    assert [line["position"] for line in written[:-1]] == list(range(1, FILLED + 1))
    assert written[-1] == {"summary": {"count": FILLED, "digest": exported.digest}}


async def test_export_writes_one_readable_line_per_event(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    await source.append("invoice-1", [eskit.NewEvent("Created", {"amount": 5}, {"user": "ann"})])
    (event,) = [e async for e in source.read_all()]
    await export_events(source, tmp_path / "log.jsonl")

    first, summary = lines(tmp_path / "log.jsonl")
    assert first == {
        "id": str(event.id),
        "stream": "invoice-1",
        "version": 0,
        "type": "Created",
        "data": {"amount": 5},
        "metadata": {"user": "ann"},
        "recorded_at": event.recorded_at.isoformat().replace("+00:00", "Z"),
        "position": 1,
    }
    assert summary["summary"]["count"] == 1


async def test_export_lines_survive_any_line_splitting(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    """Separators JSON allows raw but ``str.splitlines`` splits on are written escaped."""
    text = "a\u2028b\u2029c\x85d\re"
    await source.append("a-1", [eskit.NewEvent("E", {text: text})])
    await export_events(source, tmp_path / "log.jsonl")
    first, _ = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(first)["data"] == {text: text}


async def test_export_of_an_empty_store(source: eskit.EventStore, tmp_path: Path) -> None:
    summary = await export_events(source, tmp_path / "log.jsonl")
    assert summary.count == 0
    assert len(lines(tmp_path / "log.jsonl")) == 1
    assert not [name for name in files(tmp_path) if name.endswith(".partial")]


async def test_progress_reports_positions_and_bytes(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await source.append("a-1", [eskit.NewEvent("E", {})] * 7)
    exported: list[tuple[int, int]] = []
    imported: list[tuple[int, int]] = []
    await export_events(source, tmp_path / "log.jsonl", lambda *p: exported.append(p))
    await import_events(target, tmp_path / "log.jsonl", lambda *p: imported.append(p))

    assert exported == [(3, 7), (6, 7), (7, 7)]
    size = (tmp_path / "log.jsonl").stat().st_size
    assert imported[-1] == (size, size)


async def test_importing_twice_writes_nothing_the_second_time(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    first = await export_events(source, tmp_path / "log.jsonl")
    await import_events(target, tmp_path / "log.jsonl")
    assert await import_events(target, tmp_path / "log.jsonl") == first
    assert await target.last_position() == FILLED


async def test_importing_into_the_source_itself_is_a_retry(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    summary = await export_events(source, tmp_path / "log.jsonl")
    assert await import_events(source, tmp_path / "log.jsonl") == summary
    assert await source.last_position() == FILLED


async def test_a_retry_of_events_first_written_apart_is_recognised(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    """The file's run a-1 v0-v1 was written as two appends with another between: the
    import's one append is still a retry, and its events are found where they are."""
    rows = [_line("a-1", 0), _line("a-1", 1)]
    for row in rows:
        await target.append("a-1", [eskit.NewEvent("E", row["data"], id=uuid.UUID(row["id"]))])
        await target.append("other-1", [eskit.NewEvent("E", {})])
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    assert (await import_events(target, tmp_path / "log.jsonl")).count == 2
    assert await target.last_position() == 4


async def test_import_keeps_the_global_order_of_interleaved_streams(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    names = ["a-1", "b-1", "a-1", "c-1", "b-1", "a-1"]
    versions = {"a-1": 0, "b-1": 0, "c-1": 0}
    rows = []
    for name in names:
        rows.append(_line(name, versions[name]))
        versions[name] += 1
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    summary = await import_events(target, tmp_path / "log.jsonl")

    assert summary.count == 6
    assert [(e.stream, e.version) async for e in target.read_all()] == [
        (r["stream"], r["version"]) for r in rows
    ]


async def test_a_file_without_summary_line_is_accepted(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    (tmp_path / "log.jsonl").write_text(json.dumps(_line("a-1", 0)) + "\n\n")
    assert (await import_events(target, tmp_path / "log.jsonl")).count == 1


def _line(stream: str, version: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "stream": stream,
        "version": version,
        "type": "E",
        "data": {"v": version},
        "metadata": {},
        **changes,
    }


MALFORMED: dict[str, tuple[list[str], int, str]] = {
    "not json": (["{not json"], 1, "not an exported event"),
    "not an object": (["[1, 2]"], 1, "not an exported event"),
    "missing field": (['{"stream": "a-1", "version": 0}'], 1, "missing required field"),
    "bad version": ([json.dumps(_line("a-1", -1))], 1, "version"),
    "bad id": ([json.dumps(_line("a-1", 0, id="nope"))], 1, "id"),
    "bad data": ([json.dumps(_line("a-1", 0, data=[1]))], 1, "data"),
    "bad stream": ([json.dumps(_line("$all", 0))], 1, "reserved"),
    "version gap": ([json.dumps(_line("a-1", 0)), json.dumps(_line("a-1", 2))], 2, "follow"),
    "first version not 0": ([json.dumps(_line("a-1", 3))], 1, "expected"),
    "line after summary": (
        [json.dumps({"summary": {"count": 0, "digest": hashlib.sha256().hexdigest()}}), "{}"],
        2,
        "after the summary",
    ),
    "summary not an object": (['{"summary": 3}'], 1, "not an exported event"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=str)
async def test_malformed_input_names_the_line(
    target: eskit.EventStore, tmp_path: Path, case: str
) -> None:
    content, number, reason = MALFORMED[case]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(content) + "\n")

    with pytest.raises(TransferError, match=reason) as raised:
        await import_events(target, path)

    assert f"bad.jsonl:{number}:" in str(raised.value)


async def test_a_truncated_or_altered_file_is_refused_at_its_summary(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    await export_events(source, tmp_path / "log.jsonl")
    text = (tmp_path / "log.jsonl").read_text().splitlines()
    (tmp_path / "cut.jsonl").write_text("\n".join(text[:5] + text[-1:]) + "\n")
    (tmp_path / "edited.jsonl").write_text("\n".join(text).replace('"by":"empty"', '"by":"x"'))

    with pytest.raises(TransferError, match=rf"cut.jsonl:6: .* says {FILLED} events"):
        await import_events(target, tmp_path / "cut.jsonl")
    async with eskit.open_store("memory://") as fresh:
        with pytest.raises(TransferError, match=f"edited.jsonl:{FILLED + 1}: the file is damaged"):
            await import_events(fresh, tmp_path / "edited.jsonl")


async def test_a_target_holding_other_events_is_refused(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    await target.append("a-1", [eskit.NewEvent("Other", {})])
    (tmp_path / "log.jsonl").write_text(
        json.dumps(_line("b-1", 0)) + "\n" + json.dumps(_line("a-1", 0))
    )

    with pytest.raises(TransferError, match=r"log.jsonl:2: stream 'a-1': expected"):
        await import_events(target, tmp_path / "log.jsonl")


async def test_an_id_held_with_other_content_is_refused(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    line = _line("a-1", 0)
    await target.append("a-1", [eskit.NewEvent("E", {"v": "changed"}, id=uuid.UUID(line["id"]))])
    (tmp_path / "log.jsonl").write_text(json.dumps(line))

    with pytest.raises(TransferError, match=r"log.jsonl:1: .* different event .* \(a-1 v0: "):
        await import_events(target, tmp_path / "log.jsonl")


async def test_an_oversized_event_names_its_line(tmp_path: Path) -> None:
    rows = [_line("a-1", 0), _line("a-1", 1, data={"big": "x" * 300})]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    async with eskit.open_store("memory://", max_event_size=200) as store:
        with pytest.raises(TransferError, match=r"log.jsonl:2: event 0 .* bytes of JSON"):
            await import_events(store, tmp_path / "log.jsonl")
        assert await store.last_position() == 0  # the chunk is atomic
