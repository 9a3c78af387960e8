"""Bad requests get a gRPC status with a message, never a crash: whatever a client sends
in a read or an append, the answer is a refusal eskit chose (``INVALID_ARGUMENT``,
``FAILED_PRECONDITION`` ...), never ``INTERNAL``. In-process, over SQLite stores."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
from eskit.errors import WrongExpectedVersion
from eskit.grpc.auth import OPEN, Authenticator
from eskit.grpc.errors import refusal
from eskit.grpc.mapping import new_event
from eskit.grpc.policy import AppendPolicy
from eskit.grpc.protos import shared_pb2, streams_pb2
from eskit.grpc.reads import Reader
from eskit.grpc.streams import Streams

U64 = st.integers(min_value=0, max_value=2**64 - 1)
names = st.one_of(
    st.sampled_from(["order-1", "$ce-order", "$et-Made", "$$order-1", "$ce-", "$all", ""]),
    st.text(max_size=210),
)
Options = streams_pb2.ReadReq.Options


@st.composite
def read_options(draw: st.DrawFn) -> Any:
    options = Options(count=draw(U64), resolve_links=draw(st.booleans()))
    options.read_direction = draw(st.sampled_from([Options.Forwards, Options.Backwards]))
    if draw(st.booleans()):
        options.stream.stream_identifier.stream_name = draw(names).encode()
        where = draw(st.sampled_from(["revision", "start", "end", None]))
        if where == "revision":
            options.stream.revision = draw(U64)
        elif where is not None:
            getattr(options.stream, where).SetInParent()
    else:
        where = draw(st.sampled_from(["position", "start", "end", None]))
        if where == "position":
            options.all.position.commit_position = draw(U64)
            options.all.position.prepare_position = draw(U64)
        elif where is not None:
            getattr(options.all, where).SetInParent()
    if draw(st.booleans()):
        expression = (
            options.filter.event_type if draw(st.booleans()) else (options.filter.stream_identifier)
        )
        expression.regex = draw(st.text(max_size=12))
        expression.prefix.extend(draw(st.lists(st.text(max_size=8), max_size=3)))
        options.filter.max = draw(st.integers(0, 2**32 - 1))
    return options


def refused_on_purpose(error: BaseException) -> bool:
    code = refusal(error).code
    return code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


async def failure(work: Coroutine[Any, Any, None]) -> Exception | None:
    """The error ``work`` raised, None if it ended well (a wrong expected version is
    answered in-band, not as a status)."""
    try:
        await work
    except WrongExpectedVersion:
        return None
    except Exception as error:
        return error
    return None


async def read_some(store: eskit.EventStore, options: Any) -> None:
    responses = Reader(store).read(options, OPEN)
    try:
        async with asyncio.timeout(5):
            async for _ in responses:
                pass
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refusals")


async def filled(directory: Path) -> eskit.EventStore:
    """A SQLite store of its own with one stream (SQLite, whose integers stop at 2**63)."""
    store = eskit.open_store(f"sqlite:///{directory}/{uuid.uuid4().hex}.db")
    await store.open()
    await store.append("order-1", [eskit.NewEvent("Made", {"n": n}) for n in range(3)])
    return store


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(read_options())
def test_any_read_is_answered_or_refused_on_purpose(directory: Path, options: Any) -> None:
    async def check() -> None:
        store = await filled(directory)
        try:
            error = await failure(read_some(store, options))
        finally:
            await store.close()
        assert error is None or refused_on_purpose(error), repr(error)

    asyncio.run(check())


proposed = st.builds(
    lambda kind, content_type, data, metadata, identifier: streams_pb2.AppendReq.ProposedMessage(
        id=shared_pb2.UUID(string=identifier),
        metadata={"type": kind, "content-type": content_type},
        data=data,
        custom_metadata=metadata,
    ),
    st.text(max_size=30),
    st.sampled_from(["application/json", "application/octet-stream", "", "text/\x00"]),
    st.one_of(st.binary(max_size=40), st.just(b'{"a":1}'), st.just(b'{"a":' * 300)),
    st.one_of(st.binary(max_size=20), st.just(b'{"k":"v"}')),
    st.one_of(st.just(str(uuid.uuid4())), st.text(max_size=40)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, st.lists(proposed, max_size=3), st.one_of(st.none(), U64))
def test_any_append_is_written_or_refused_on_purpose(
    directory: Path, stream: str, messages: list[Any], revision: int | None
) -> None:
    async def check() -> None:
        store = await filled(directory)
        streams = Streams(store, Authenticator(None), AppendPolicy())
        expected = eskit.ANY if revision is None else revision

        async def append() -> None:
            events = [new_event(message) for message in messages]
            await streams.append(OPEN, stream, events, expected)

        try:
            error = await failure(append())
        finally:
            await store.close()
        assert error is None or refused_on_purpose(error), repr(error)

    asyncio.run(check())
