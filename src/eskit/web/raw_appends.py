"""What a raw append (``POST /streams/{stream}``) must pass in an application with a command
bus: every event decodes through the bus's event registry, and, on the stream of one of its
aggregates, applies to that aggregate as it stands. An event that fails either would stop
every projection that reads it, or every later command on the aggregate, for good.

Categories the application names free-form take any event (``AppSpec.free_form_categories``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eskit.application.commands import CommandBus
from eskit.application.repository import Repository
from eskit.domain.events import SCHEMA_VERSION
from eskit.errors import EskitError, StoreError, Unavailable
from eskit.store import rules
from eskit.store.model import NewEvent, RawData
from eskit.store.nesting import check_nesting
from eskit.web import schemas
from eskit.web.errors import ApiError


async def check_raw_append(
    bus: CommandBus | None,
    free_form: frozenset[str],
    stream: str,
    events: Sequence[NewEvent | schemas.NewEvent],
) -> None:
    """422 naming the event and why, unless each event decodes and applies (or there is no
    bus, or the stream's category is free-form); nothing is written then."""
    if bus is None or rules.category(stream) in free_form:
        return
    decoded = [_decoded(bus, index, event) for index, event in enumerate(events)]
    repository = bus.repository_for(stream)
    if repository is not None:
        await _applies(repository, stream, events, decoded)


def _decoded(bus: CommandBus, index: int, event: NewEvent | schemas.NewEvent) -> list[Any]:
    """Today's events ``event`` becomes, read as every reader of the store will read it."""
    where = f"events[{index}] ({event.type})"
    if isinstance(event.data, RawData):
        raise ApiError(
            422,
            "InvalidEvent",
            f"{where} data is bytes ({event.data.content_type or 'no content type'}), not a"
            " JSON object: no event of the application decodes from it (a free-form"
            " category takes it)",
        )
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    deepest = rules.MAX_NESTING  # checked before anything recurses into the event
    check_nesting(event.data, f"{where} data", "data", deepest)
    check_nesting(metadata, f"{where} metadata", "metadata", deepest)
    try:
        return bus.events.check(event.type, event.data, metadata)
    except Exception as error:  # whatever stops decoding stops the readers too
        kind = type(error).__name__ if isinstance(error, EskitError) else "InvalidEvent"
        version = metadata.get(SCHEMA_VERSION, 1)
        raise ApiError(
            422,
            kind,
            f"{where} does not decode as schema version {version!r:.20}"
            f" (metadata {SCHEMA_VERSION}, 1 if absent): {type(error).__name__}: {error}",
        ) from None


async def _applies(
    repository: Repository[Any],
    stream: str,
    events: Sequence[NewEvent | schemas.NewEvent],
    decoded: list[list[Any]],
) -> None:
    """422 unless the aggregate of ``stream``, loaded as a command would load it, takes the
    events: a type its ``evolve`` does not handle would break every later command on it.

    The error is named by its class only: its message may quote the aggregate's state,
    which the token may not read. An aggregate that does not load already is not judged.
    """
    model = repository.model
    aggregate_id = stream[len(model.category) + 1 :]
    try:
        state = (await repository.load(aggregate_id, missing_ok=True)).state
    except (StoreError, Unavailable):
        raise
    except Exception:
        return
    for index, (event, today) in enumerate(zip(events, decoded, strict=True)):
        for typed in today:
            try:
                state = model.evolve(state, typed)
            except Exception as error:
                raise ApiError(
                    422,
                    "NotApplicable",
                    f"events[{index}] ({event.type}) does not apply to the aggregate of"
                    f" {stream!r} ({model.category}): its evolve raises"
                    f" {type(error).__name__}",
                ) from None
