"""The message classes and servicer bases of KurrentDB's gRPC API.

Streams, gossip, persistent subscriptions, cluster and projections come from the modules
``kurrentdbclient`` generates from KurrentDB's published ``.proto`` files (pinned in the
``grpc`` extra): one set of classes, the one the Python client itself is tested with, and no
code generation in eskit's build. ``kurrentdbclient`` does not ship the server-features
service (which clients such as the Node.js one ask first): its two messages are described
here, field for field as KurrentDB's ``serverfeatures.proto`` has them, in a pool of their
own. Users and operations need no messages: eskit answers them ``UNIMPLEMENTED``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from kurrentdbclient.protos.v1 import (
    gossip_pb2,
    gossip_pb2_grpc,
    persistent_pb2,
    persistent_pb2_grpc,
    shared_pb2,
    status_pb2,
    streams_pb2,
    streams_pb2_grpc,
)

__all__ = [
    "SERVER_FEATURES_SERVICE",
    "SupportedMethod",
    "SupportedMethods",
    "gossip_pb2",
    "gossip_pb2_grpc",
    "persistent_pb2",
    "persistent_pb2_grpc",
    "shared_pb2",
    "status_pb2",
    "streams_pb2",
    "streams_pb2_grpc",
]

SERVER_FEATURES_SERVICE = "event_store.client.server_features.ServerFeatures"


def _server_features() -> tuple[Any, Any]:
    """``SupportedMethods`` and ``SupportedMethod`` of ``serverfeatures.proto``."""
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    package = "event_store.client.server_features"
    file = descriptor_pb2.FileDescriptorProto(
        name="eskit/serverfeatures.proto", package=package, syntax="proto3"
    )
    methods = file.message_type.add(name="SupportedMethods")
    methods.field.add(
        name="methods",
        number=1,
        label=repeated,
        type=message,
        type_name=f".{package}.SupportedMethod",
    )
    methods.field.add(name="event_store_server_version", number=2, label=optional, type=string)
    method = file.message_type.add(name="SupportedMethod")
    method.field.add(name="method_name", number=1, label=optional, type=string)
    method.field.add(name="service_name", number=2, label=optional, type=string)
    method.field.add(name="features", number=3, label=repeated, type=string)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.SupportedMethods")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.SupportedMethod")),
    )


SupportedMethods, SupportedMethod = _server_features()
