"""``deleted_keeps_revision`` (the gRPC layer's KurrentDB view): a soft-deleted stream also
matches its last version before the delete, for appends, deletes and tombstones, on every
backend; without it (eskit's own API) the stream counts as absent, as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import eskit
from tests import postgres

BACKENDS = ("memory", "sqlite", "postgres")


def url_of(backend: str, directory: Path) -> str:
    if backend == "memory":
        return "memory://"
    return f"sqlite:///{directory}/events.db" if backend == "sqlite" else postgres.store_url()


def events(n: int) -> list[eskit.NewEvent]:
    return [eskit.NewEvent("Happened", {"n": i}) for i in range(n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_soft_deleted_stream_matches_either_form(backend: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with eskit.open_store(url_of(backend, tmp_path)) as store:
            stream = f"order-{tmp_path.name}-{backend}"
            await store.append(stream, events(3))
            await store.delete_stream(stream, 2, deleted_keeps_revision=True)
            # eskit's own API is unchanged: a soft-deleted stream counts as absent
            with pytest.raises(eskit.WrongExpectedVersion):
                await store.append(stream, events(1), 2)
            with pytest.raises(eskit.WrongExpectedVersion):
                await store.tombstone_stream(stream, 2)
            with pytest.raises(eskit.WrongExpectedVersion):  # nor any other version
                await store.append(stream, events(1), 1, deleted_keeps_revision=True)
            # deleting it again, expecting its old last revision or no stream
            await store.delete_stream(stream, 2, deleted_keeps_revision=True)
            await store.delete_stream(stream, eskit.NO_STREAM, deleted_keeps_revision=True)
            result = await store.append(stream, events(1), 2, deleted_keeps_revision=True)
            assert result.last_version == 3
            assert [e.version async for e in store.read_stream(stream)] == [3]
            await store.delete_stream(stream, 3)
            await store.tombstone_stream(stream, 3, deleted_keeps_revision=True)
            with pytest.raises(eskit.StreamDeleted):
                await store.append(stream, events(1), deleted_keeps_revision=True)

            other = f"{stream}x"
            await store.append(other, events(2))
            await store.delete_stream(other)
            await store.append(other, events(1), eskit.NO_STREAM, deleted_keeps_revision=True)

    asyncio.run(main())
