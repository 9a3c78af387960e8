"""The Streams service: ``Append``, ``BatchAppend``, ``Read``, ``Delete`` and ``Tombstone``
over an eskit store, with the caller's token checked on each stream's category.

An append's expected state (any, no stream, exists, exact revision) is eskit's expected
version; a mismatch answers KurrentDB's wrong-expected-version result with the stream's
actual revision, and nothing is written. Event ids make a retried append idempotent, as in
eskit. An append to ``$$<stream>`` sets the stream's metadata (``metadata``). A soft-deleted
stream matches both an expected "no stream" (eskit's view) and its last revision before the
delete (KurrentDB's): the store decides it under its write lock (``deleted_keeps_revision``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import msgspec
from google.protobuf import any_pb2, empty_pb2
from kurrentdbclient.protos.google.rpc import code_pb2

from eskit.errors import StreamDeleted, WrongExpectedVersion
from eskit.grpc import metadata as stream_metadata
from eskit.grpc.auth import Authenticator
from eskit.grpc.errors import Context, answered, denied, invalid, refusal, streamed
from eskit.grpc.mapping import expected_of, new_event, stream_name
from eskit.grpc.policy import AppendPolicy
from eskit.grpc.protos import shared_pb2, status_pb2, streams_pb2, streams_pb2_grpc
from eskit.grpc.reads import Reader
from eskit.grpc.service import Methods, Service
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RawData,
)
from eskit.web.tokens import Grant

METHODS: Methods = {
    "event_store.client.streams.streams": {
        "read": ("position", "events"),
        "append": (),
        "batchappend": ("deadline_duration",),
        "delete": (),
        "tombstone": (),
    }
}
MAX_EVENTS = 10_000
"""Events one append may carry (KurrentDB bounds an append by size; eskit also by count)."""
MAX_PENDING_BATCHES = 64
"""Batch appends one ``BatchAppend`` call may have open (begun, not final) at once."""


def register(server: grpc.aio.Server, service: Service) -> Methods:
    """The generated handlers, but Read's serializer also passes bytes through (an event's
    ``ReadResp`` written by ``wire``)."""
    captured = _Captured()
    streams_pb2_grpc.add_StreamsServicer_to_server(  # type: ignore[no-untyped-call]
        Streams(service.store, service.auth, service.policy), captured
    )
    handlers = dict(captured.handlers)
    handlers["Read"] = handlers["Read"]._replace(response_serializer=_serialized)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    return METHODS


SERVICE = "event_store.client.streams.Streams"


class _Captured:
    """Takes the handlers the generated code registers, to change one before serving."""

    handlers: dict[str, Any]

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = handlers


def _serialized(message: Any) -> bytes:
    return message if type(message) is bytes else message.SerializeToString()


class Streams(streams_pb2_grpc.StreamsServicer):
    def __init__(self, store: EventStore, auth: Authenticator, policy: AppendPolicy) -> None:
        self.store = store
        self.auth = auth
        self.policy = policy
        self.reader = Reader(store)

    def _grant(self, context: Context) -> Grant:
        return self.auth.grant(context.invocation_metadata())

    @answered
    async def Append(self, request_iterator: Any, context: Context) -> Any:
        grant = self._grant(context)
        options: Any = None
        events: list[NewEvent] = []
        async for request in request_iterator:
            if request.WhichOneof("content") == "options":
                options = request.options
            elif options is None:
                raise invalid("an append starts with its options (the stream and expected state)")
            else:
                events.append(new_event(request.proposed_message))
                if len(events) > MAX_EVENTS:
                    raise invalid(f"an append may carry at most {MAX_EVENTS} events")
        if options is None:
            raise invalid("an append needs its options (the stream and expected state)")
        stream = stream_name(options.stream_identifier)
        expected = expected_of(options)
        try:
            result = await self.append(grant, stream, events, expected)
        except WrongExpectedVersion as error:
            return streams_pb2.AppendResp(wrong_expected_version=_wrong_version(error))
        success = streams_pb2.AppendResp.Success(
            position=streams_pb2.AppendResp.Position(
                commit_position=result.last_position, prepare_position=result.last_position
            )
        )
        if result.last_version < 0:
            success.no_stream.CopyFrom(shared_pb2.Empty())
        else:
            success.current_revision = result.last_version
        return streams_pb2.AppendResp(success=success)

    async def append(
        self, grant: Grant, stream: str, events: Sequence[NewEvent], expected: ExpectedVersion
    ) -> AppendResult:
        """Check and append; ``WrongExpectedVersion`` as the store raises it."""
        target = stream_metadata.target(stream)
        name = stream if target is None else target
        rules.check_name(name)
        category = rules.category(name)
        if not grant.allows("write", category):
            raise denied(f"token {grant.name!r} may not write to category {category!r}")
        if target is not None:
            return await self._set_metadata(target, events)
        if not events:
            return await self._empty_append(stream, expected)
        await self.policy.check(stream, events)
        return await self.store.append(stream, events, expected, deleted_keeps_revision=True)

    async def _set_metadata(self, target: str, events: Sequence[NewEvent]) -> AppendResult:
        if not events:
            raise invalid("an append to a metadata stream needs a $metadata event")
        last = events[-1]
        body = last.data.body if isinstance(last.data, RawData) else msgspec.json.encode(last.data)
        await self.store.set_stream_metadata(target, stream_metadata.parse(body))
        return AppendResult(0, 0)

    async def _empty_append(self, stream: str, expected: ExpectedVersion) -> AppendResult:
        """An append of no events: checks the expected state, writes nothing."""
        actual = await self.store.stream_version(stream)
        if (
            (expected is NO_STREAM and actual is not None)
            or (expected is STREAM_EXISTS and actual is None)
            or (isinstance(expected, int) and expected != actual)
        ):
            raise WrongExpectedVersion(stream, expected, actual)
        return AppendResult(-1 if actual is None else actual, 0)

    @streamed
    async def BatchAppend(self, request_iterator: Any, context: Context) -> AsyncIterator[Any]:
        grant = self._grant(context)
        pending: dict[bytes, tuple[Any, list[NewEvent]]] = {}
        async for request in request_iterator:
            key = request.correlation_id.SerializeToString()
            if key not in pending:
                if not request.HasField("options"):
                    raise invalid("a batch append starts with its options")
                if len(pending) >= MAX_PENDING_BATCHES:
                    raise invalid(
                        f"at most {MAX_PENDING_BATCHES} batch appends may be open at once"
                        " on one call: finish one (is_final) before starting another"
                    )
                pending[key] = (request, [])
            first, events = pending[key]
            events.extend(new_event(message) for message in request.proposed_messages)
            if len(events) > MAX_EVENTS:
                raise invalid(f"an append may carry at most {MAX_EVENTS} events")
            if request.is_final:
                del pending[key]
                yield await self._batch(grant, first, events)

    async def _batch(self, grant: Grant, first: Any, events: list[NewEvent]) -> Any:
        options = first.options
        response = streams_pb2.BatchAppendResp(
            correlation_id=first.correlation_id, stream_identifier=options.stream_identifier
        )
        try:
            stream = stream_name(options.stream_identifier)
            expected = expected_of(options, exact="stream_position")
            result = await self.append(grant, stream, events, expected)
        except Exception as error:
            response.error.CopyFrom(_batch_error(error))
            return response
        success = streams_pb2.BatchAppendResp.Success(
            position=shared_pb2.AllStreamPosition(
                commit_position=result.last_position, prepare_position=result.last_position
            )
        )
        if result.last_version < 0:
            success.no_stream.CopyFrom(empty_pb2.Empty())
        else:
            success.current_revision = result.last_version
        response.success.CopyFrom(success)
        return response

    @streamed
    async def Read(self, request: Any, context: Context) -> AsyncIterator[Any]:
        grant = self._grant(context)
        async for response in self.reader.read(request.options, grant):
            yield response

    @answered
    async def Delete(self, request: Any, context: Context) -> Any:
        position = await self._delete(request.options, context, hard=False)
        return streams_pb2.DeleteResp(
            position=streams_pb2.DeleteResp.Position(
                commit_position=position, prepare_position=position
            )
        )

    @answered
    async def Tombstone(self, request: Any, context: Context) -> Any:
        position = await self._delete(request.options, context, hard=True)
        return streams_pb2.TombstoneResp(
            position=streams_pb2.TombstoneResp.Position(
                commit_position=position, prepare_position=position
            )
        )

    async def _delete(self, options: Any, context: Context, hard: bool) -> int:
        grant = self._grant(context)
        stream = stream_name(options.stream_identifier)
        rules.check_name(stream)
        category = rules.category(stream)
        if not grant.allows("write", category):
            raise denied(f"token {grant.name!r} may not write to category {category!r}")
        expected = expected_of(options)
        if hard:
            await self.store.tombstone_stream(stream, expected, deleted_keeps_revision=True)
        else:
            await self.store.delete_stream(stream, expected, deleted_keeps_revision=True)
        return await self.store.last_position()


def _wrong_version(error: WrongExpectedVersion) -> Any:
    """KurrentDB's wrong-expected-version result, current and expected, in both the
    current fields and those of clients from before 20.6.1."""
    wrong = streams_pb2.AppendResp.WrongExpectedVersion()
    if error.actual is None:
        wrong.current_no_stream.CopyFrom(shared_pb2.Empty())
        wrong.no_stream_20_6_0.CopyFrom(shared_pb2.Empty())
    else:
        wrong.current_revision = error.actual
        wrong.current_revision_20_6_0 = error.actual
    expected = error.expected
    if isinstance(expected, int):
        wrong.expected_revision = expected
        wrong.expected_revision_20_6_0 = expected
    elif expected is ANY:
        wrong.expected_any.CopyFrom(shared_pb2.Empty())
        wrong.any_20_6_0.CopyFrom(shared_pb2.Empty())
    elif expected is STREAM_EXISTS:
        wrong.expected_stream_exists.CopyFrom(shared_pb2.Empty())
        wrong.stream_exists_20_6_0.CopyFrom(shared_pb2.Empty())
    else:
        wrong.expected_no_stream.CopyFrom(shared_pb2.Empty())
    return wrong


def _batch_error(error: Exception) -> Any:
    """The ``Status`` of a batch append that failed, with KurrentDB's detail message."""
    detail = any_pb2.Any()
    if isinstance(error, WrongExpectedVersion):
        wrong = shared_pb2.WrongExpectedVersion()
        if error.actual is None:
            wrong.current_no_stream.CopyFrom(empty_pb2.Empty())
        else:
            wrong.current_stream_revision = error.actual
        if isinstance(error.expected, int):
            wrong.expected_stream_position = error.expected
        elif error.expected is ANY:
            wrong.expected_any.CopyFrom(empty_pb2.Empty())
        elif error.expected is STREAM_EXISTS:
            wrong.expected_stream_exists.CopyFrom(empty_pb2.Empty())
        else:
            wrong.expected_no_stream.CopyFrom(empty_pb2.Empty())
        detail.Pack(wrong)
        return status_pb2.Status(
            code=code_pb2.Code.FAILED_PRECONDITION, message=str(error), details=detail
        )
    if isinstance(error, StreamDeleted):
        detail.Pack(
            shared_pb2.StreamDeleted(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=error.stream.encode())
            )
        )
        return status_pb2.Status(
            code=code_pb2.Code.FAILED_PRECONDITION, message=str(error), details=detail
        )
    refused = refusal(error)
    if refused.code.name == "PERMISSION_DENIED":
        detail.Pack(shared_pb2.AccessDenied())
    else:
        detail.Pack(shared_pb2.BadRequest(message=refused.message))
    code = code_pb2.Code.Value(refused.code.name)
    return status_pb2.Status(code=code, message=refused.message, details=detail)
