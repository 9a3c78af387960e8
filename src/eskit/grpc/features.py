"""Server features (which methods this server supports, as clients ask before choosing
their calls) and the services eskit does not serve: projections, users and operations
answer ``UNIMPLEMENTED`` with a message that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

import eskit
from eskit.grpc.protos import SERVER_FEATURES_SERVICE, SupportedMethod, SupportedMethods
from eskit.grpc.service import Methods

METHODS: Methods = {
    "event_store.client.server_features.serverfeatures": {"getsupportedmethods": ()},
}

UNSERVED = {
    "event_store.client.projections.Projections": "projections",
    "event_store.client.users.Users": "users",
    "event_store.client.operations.Operations": "operations",
    "event_store.client.monitoring.Monitoring": "monitoring",
    "kurrentdb.protocol.v2.streams.StreamsService": "multi-stream append (v2 streams)",
}
"""Services of KurrentDB that eskit answers UNIMPLEMENTED, by their gRPC names."""

SERVER_VERSION = "24.10.0"
"""The KurrentDB version eskit reports: the protocol whose messages it serves."""


def supported(served: Methods) -> Any:
    """The ``SupportedMethods`` answer: ``served`` (by the service modules) and this one."""
    methods = [
        SupportedMethod(method_name=method, service_name=service, features=list(features))
        for service, by_method in {**served, **METHODS}.items()
        for method, features in by_method.items()
    ]
    return SupportedMethods(methods=methods, event_store_server_version=SERVER_VERSION)


def features_handler(served: Methods) -> grpc.GenericRpcHandler:
    answer: bytes = supported(served).SerializeToString()

    async def get_supported_methods(request: bytes, context: Any) -> bytes:
        return answer

    return grpc.method_handlers_generic_handler(
        SERVER_FEATURES_SERVICE,
        {
            "GetSupportedMethods": grpc.unary_unary_rpc_method_handler(
                get_supported_methods,
                request_deserializer=_raw,
                response_serializer=_raw,
            )
        },
    )


def _raw(message: bytes) -> bytes:
    return message


class Unserved(grpc.GenericRpcHandler):
    """Answers every method of the services eskit does not serve ``UNIMPLEMENTED``."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        service, _, method = (handler_call_details.method or "").lstrip("/").partition("/")
        what = UNSERVED.get(service)
        if what is None:
            return None
        message = (
            f"eskit {eskit.__version__} does not serve KurrentDB's {what} service ({method});"
            " it serves streams, persistent subscriptions, gossip and server features:"
            " see docs/kurrentdb.md"
        )
        return grpc.stream_stream_rpc_method_handler(_refuse(message), _raw, _raw)


def _refuse(message: str) -> Callable[[Any, Any], Any]:
    async def refuse(requests: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        yield b""  # pragma: no cover - makes this an async generator

    return refuse
