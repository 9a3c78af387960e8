"""Export to JSON Lines and import back: round trips keep every event exactly, imports are
idempotent and say what they wrote, damaged files are refused whole before anything is
written, and disagreeing stores are refused with the line named."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eskit
from eskit.store import transfer
from eskit.store.rules import MAX_NESTING
from eskit.store.transfer import (
    Digest,
    ExportedRawEvent,
    Summary,
    TransferError,
    canonical,
    check_file,
    export_events,
    import_events,
)
from eskit.testing.conformance.helpers import PAYLOADS, nested
from eskit.testing.conformance.raw import RAW_EXAMPLES
from tests import postgres

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/source.db"
    async with eskit.open_store(url) as store:
        store.page_size = 3  # a few events already span several pages
        yield store


@pytest.fixture(params=["sqlite", "postgres"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    url = f"sqlite:///{tmp_path}/target.db" if request.param == "sqlite" else postgres.store_url()
    async with eskit.open_store(url) as store:
        yield store


FILLED = 2 * len(PAYLOADS) + 5 + len(RAW_EXAMPLES)


async def fill(store: eskit.EventStore) -> None:
    """Interleaved streams, all kinds of JSON, metadata, payloads kept as bytes, a
    soft-deleted stream: ``FILLED`` events."""
    for name, payload in PAYLOADS.items():
        await store.append(f"payload-{name}", [eskit.NewEvent("Held", payload, {"p": name})])
        await store.append("invoice-1", [eskit.NewEvent("Touched", {"by": name})])
    await store.append(
        "invoice-2",
        [eskit.NewEvent("Created", {"n": i}, {"correlation_id": "c"}) for i in range(5)],
    )
    metadata = [None, eskit.RawData("", b"\xff raw metadata")]
    for i, raw in enumerate(RAW_EXAMPLES):
        await store.append("blob-1", [eskit.NewEvent("Blob", raw, metadata[i % 2])])
    await store.delete_stream("payload-empty")


async def log(store: eskit.EventStore) -> list[tuple[Any, ...]]:
    """The log without what the target assigns itself (positions, times)."""
    return [
        (e.id, e.stream, e.version, e.type, e.data, e.metadata, e.raw, e.raw_metadata)
        async for e in store.read_all()
    ]


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def export_lines(rows: list[dict[str, Any]]) -> list[str]:
    """``rows`` as the lines of an export: one per event, then their summary."""
    digest = Digest()
    for row in rows:
        digest.add(canonical(msgspec.convert(row, ExportedRawEvent)))
    trailer = {"summary": msgspec.to_builtins(digest.summary())}
    return [json.dumps(row) for row in [*rows, trailer]]


def write_export(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(line + "\n" for line in export_lines(rows)))


def summary_of(imported: Summary) -> Summary:
    return Summary(imported.count, imported.digest)


async def test_round_trip_keeps_every_event_and_the_digest(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    exported = await export_events(source, tmp_path / "log.jsonl")
    imported = await import_events(target, tmp_path / "log.jsonl")
    again = await export_events(target, tmp_path / "again.jsonl")

    assert exported.count == await source.last_position() == FILLED
    assert summary_of(imported) == exported == again
    assert (imported.written, imported.present) == (FILLED, 0)
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
    end = imported.index((size, size)) + 1
    check, write = imported[:end], imported[end:]  # the file is read twice
    assert check == sorted(check)
    assert write == sorted(write)
    assert write[-1] == (size, size)


async def test_importing_twice_writes_nothing_the_second_time(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    first = await export_events(source, tmp_path / "log.jsonl")
    await import_events(target, tmp_path / "log.jsonl")
    again = await import_events(target, tmp_path / "log.jsonl")
    assert summary_of(again) == first
    assert (again.written, again.present) == (0, FILLED)
    assert await target.last_position() == FILLED


async def test_a_longer_export_of_the_same_log_writes_only_what_is_missing(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    """The earlier file's last chunk ends inside a run of the longer file's: its events
    there are recognised, the rest appended after them."""
    await fill(source)
    await export_events(source, tmp_path / "early.jsonl")
    await source.append("invoice-2", [eskit.NewEvent("Paid", {"n": i}) for i in range(3)])
    await source.append("invoice-3", [eskit.NewEvent("Created", {})])
    later = await export_events(source, tmp_path / "later.jsonl")

    early = await import_events(target, tmp_path / "early.jsonl")
    imported = await import_events(target, tmp_path / "later.jsonl")

    assert (early.written, early.present) == (FILLED, 0)
    assert (imported.written, imported.present) == (4, FILLED)
    assert summary_of(imported) == later
    assert await log(target) == await log(source)


async def test_importing_into_the_source_itself_is_a_retry(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(source)
    summary = await export_events(source, tmp_path / "log.jsonl")
    imported = await import_events(source, tmp_path / "log.jsonl")
    assert (summary_of(imported), imported.written, imported.present) == (summary, 0, FILLED)
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
    write_export(tmp_path / "log.jsonl", rows)

    imported = await import_events(target, tmp_path / "log.jsonl")
    assert (imported.count, imported.written, imported.present) == (2, 0, 2)
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
    write_export(tmp_path / "log.jsonl", rows)

    summary = await import_events(target, tmp_path / "log.jsonl")

    assert summary.count == 6
    assert [(e.stream, e.version) async for e in target.read_all()] == [
        (r["stream"], r["version"]) for r in rows
    ]


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
    "version gap": (export_lines([_line("a-1", 0), _line("a-1", 2)]), 2, "follow"),
    "first version not 0": (export_lines([_line("a-1", 3)]), 1, "expected"),
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


def _cut(text: str, lines: int, keep: float = 0.0) -> str:
    """The first ``lines`` lines of ``text``, and ``keep`` of the next one (cut mid-line)."""
    kept = text.splitlines(keepends=True)
    following = kept[lines] if lines < len(kept) else ""
    return "".join(kept[:lines]) + following[: int(len(following) * keep)]


def _edit(text: str, number: int, old: str, new: str) -> str:
    kept = text.splitlines(keepends=True)
    assert old in kept[number - 1], kept[number - 1]
    kept[number - 1] = kept[number - 1].replace(old, new)
    return "".join(kept)


DAMAGED: dict[str, tuple[Callable[[str], str], int, str]] = {
    "cut at a line boundary": (lambda t: _cut(t, 10), 10, "incomplete: it ends after 10 events"),
    "cut mid-line": (lambda t: _cut(t, 10, 0.5), 11, "not an exported event .*cut short"),
    "cut inside the summary": (lambda t: _cut(t, FILLED, 0.5), FILLED + 1, "cut short"),
    "summary missing": (lambda t: _cut(t, FILLED), FILLED, f"ends after {FILLED} events without"),
    "one line edited": (
        lambda t: _edit(t, 12, '"Touched"', '"Tinkered"'),
        FILLED + 1,
        f"damaged: its summary says {FILLED} events with digest [0-9a-f]+, but its lines hold"
        f" {FILLED} events with digest",
    ),
    "summary with a wrong count": (
        lambda t: _edit(t, FILLED + 1, f'"count":{FILLED}', f'"count":{FILLED + 1}'),
        FILLED + 1,
        f"damaged: its summary says {FILLED + 1} events .* its lines hold {FILLED} events",
    ),
}


@pytest.mark.parametrize("case", DAMAGED, ids=str)
async def test_a_damaged_file_is_refused_before_anything_is_written(
    source: eskit.EventStore,
    target: eskit.EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """Checked whole before the first append: however far into the file the damage is,
    the target keeps its events and its last position."""
    monkeypatch.setattr(transfer, "CHUNK_EVENTS", 3)  # many appends before the damage
    damage, number, reason = DAMAGED[case]
    await fill(source)
    await export_events(source, tmp_path / "log.jsonl")
    path = tmp_path / "damaged.jsonl"
    path.write_text(damage((tmp_path / "log.jsonl").read_text()))
    await target.append("other-1", [eskit.NewEvent("Kept", {})])
    before = (await log(target), await target.last_position())

    with pytest.raises(TransferError, match=f"damaged.jsonl:{number}: .*{reason}"):
        await import_events(target, path)

    assert (await log(target), await target.last_position()) == before


async def test_a_file_checked_before_is_not_checked_again_but_compared_at_the_end(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    """``checked`` is what ``check_file`` returned (the CLI checks before opening the
    store); a file that changed since is reported, not taken for the one checked."""
    write_export(tmp_path / "log.jsonl", [_line("a-1", 0), _line("a-1", 1)])
    checked = await check_file(tmp_path / "log.jsonl")
    imported = await import_events(target, tmp_path / "log.jsonl", checked=checked)
    assert (summary_of(imported), imported.written) == (checked, 2)

    write_export(tmp_path / "other.jsonl", [_line("b-1", 0)])
    with pytest.raises(TransferError, match=r"other\.jsonl: the file changed while it was"):
        await import_events(target, tmp_path / "other.jsonl", checked=checked)


async def test_an_empty_file_is_refused(target: eskit.EventStore, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(
        TransferError, match=r"empty.jsonl: the file is incomplete: it ends after 0"
    ):
        await import_events(target, tmp_path / "empty.jsonl")
    assert await target.last_position() == 0


async def test_a_target_holding_other_events_is_refused(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    await target.append("a-1", [eskit.NewEvent("Other", {})])
    write_export(tmp_path / "log.jsonl", [_line("b-1", 0), _line("a-1", 0)])

    with pytest.raises(TransferError, match=r"log.jsonl:2: stream 'a-1': expected"):
        await import_events(target, tmp_path / "log.jsonl")


async def test_an_id_held_with_other_content_is_refused(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    line = _line("a-1", 0)
    await target.append("a-1", [eskit.NewEvent("E", {"v": "changed"}, id=uuid.UUID(line["id"]))])
    write_export(tmp_path / "log.jsonl", [line])

    with pytest.raises(TransferError, match=r"log.jsonl:1: .* different event .* \(a-1 v0: "):
        await import_events(target, tmp_path / "log.jsonl")


async def test_an_oversized_event_names_its_line(tmp_path: Path) -> None:
    rows = [_line("a-1", 0), _line("a-1", 1, data={"big": "x" * 300})]
    write_export(tmp_path / "log.jsonl", rows)
    async with eskit.open_store("memory://", max_event_size=200) as store:
        with pytest.raises(TransferError, match=r"log.jsonl:2: event 0 .* bytes of JSON"):
            await import_events(store, tmp_path / "log.jsonl")
        assert await store.last_position() == 0  # the chunk is atomic


def _write_with_deep_line(path: Path, rows: list[dict[str, Any]], depth: int) -> None:
    """An export of ``rows`` with a matching summary, where each ``"DEEP"`` value becomes
    JSON nested so that its object ``{"a": "DEEP"}`` is ``depth`` levels deep (like
    ``nested(depth)``), written as text: too deep for json or msgspec to encode."""
    inner = range(2, depth + 1)
    deep = "".join('{"a":' if level % 2 else "[" for level in inner) + "1"
    deep += "".join("}" if level % 2 else "]" for level in reversed(inner))
    lines = export_lines(rows)
    digest = Digest()
    for row in rows:
        digest.add(
            canonical(msgspec.convert(row, ExportedRawEvent)).replace(b'"DEEP"', deep.encode())
        )
    lines[-1] = json.dumps({"summary": msgspec.to_builtins(digest.summary())})
    path.write_text("".join(line.replace('"DEEP"', deep) + "\n" for line in lines))


@pytest.mark.parametrize(
    ("field", "depth"), [("data", MAX_NESTING + 1), ("data", 10_000), ("metadata", 10_000)]
)
async def test_a_line_nested_too_deep_is_refused_before_anything_is_written(
    target: eskit.EventStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    depth: int,
) -> None:
    """The store's nesting limit, checked in the first pass: the line and the path are
    named, never a ``RecursionError`` from a parser that recurses, nor a refusal halfway
    through the appends. The target keeps its events and its last position."""
    monkeypatch.setattr(transfer, "CHUNK_EVENTS", 3)  # many appends before the deep line
    rows = [_line(f"a-{i}", 0) for i in range(7)]
    rows += [_line("deep-1", 0, **{field: {"a": "DEEP"}}), _line("z-1", 0)]
    path = tmp_path / "deep.jsonl"
    _write_with_deep_line(path, rows, depth)
    assert depth > 1000 or json.loads(path.read_text().splitlines()[7])[field] == nested(depth)
    await target.append("other-1", [eskit.NewEvent("Kept", {})])
    before = (await log(target), await target.last_position())
    where = rf"{field}(\.a\[0\]){{{MAX_NESTING // 2}}}"  # data.a[0].a[0]... (101 levels)
    refused = rf"deep\.jsonl:8: nested deeper than {MAX_NESTING} levels, at {where} \("

    with pytest.raises(TransferError, match=refused):
        await check_file(path)
    with pytest.raises(TransferError, match=refused):
        await import_events(target, path)

    assert (await log(target), await target.last_position()) == before


async def test_a_line_nested_to_the_limit_is_imported(
    target: eskit.EventStore, tmp_path: Path
) -> None:
    """Data and metadata nested ``MAX_NESTING`` deep, as the store takes them, inside the
    line's own object: not refused."""
    rows = [_line("a-1", 0, data=nested(MAX_NESTING), metadata=nested(MAX_NESTING))]
    write_export(tmp_path / "log.jsonl", rows)

    imported = await import_events(target, tmp_path / "log.jsonl")

    assert imported.written == 1
    assert (await log(target))[0][4:6] == (nested(MAX_NESTING), nested(MAX_NESTING))


async def test_raw_payloads_are_exported_as_base64_beside_empty_data(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    raw = eskit.RawData("application/octet-stream", bytes(range(256)))
    await source.append("blob-1", [eskit.NewEvent("Blob", raw, eskit.RawData("", b"m"))])
    await export_events(source, tmp_path / "log.jsonl")

    first, _ = lines(tmp_path / "log.jsonl")
    assert (first["data"], first["metadata"]) == ({}, {})
    assert first["content_type"] == "application/octet-stream"
    assert base64.b64decode(first["raw_data"]) == bytes(range(256))
    assert base64.b64decode(first["raw_metadata"]) == b"m"


async def test_an_edited_raw_payload_is_refused_by_the_digest(
    source: eskit.EventStore, target: eskit.EventStore, tmp_path: Path
) -> None:
    await source.append("blob-1", [eskit.NewEvent("Blob", eskit.RawData("", b"abc"))])
    await export_events(source, tmp_path / "log.jsonl")
    text = (tmp_path / "log.jsonl").read_text()
    edited = text.replace(base64.b64encode(b"abc").decode(), base64.b64encode(b"abd").decode())
    (tmp_path / "log.jsonl").write_text(edited)
    with pytest.raises(TransferError, match="damaged"):
        await import_events(target, tmp_path / "log.jsonl")
    assert await log(target) == []
