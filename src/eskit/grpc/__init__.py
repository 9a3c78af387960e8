"""KurrentDB's gRPC protocol over an eskit store: ``eskit grpc STORE_URL`` lets the official
KurrentDB (EventStoreDB) clients (.NET, Java, Go, Node, Rust, Python's ``kurrentdbclient``)
append, read and subscribe against an embedded SQLite file or PostgreSQL.

One module per service: ``streams`` (append, batch append, read, subscribe, delete,
tombstone), ``persistent`` (persistent subscriptions over eskit's consumer groups, with
``groups`` mapping their settings), ``gossip`` (a single node that is always the leader),
``features`` (the server features and the services answered ``UNIMPLEMENTED``).
``server`` puts them on one ``grpc.aio`` server with TLS and the token check of ``auth``.

The message classes are those ``kurrentdbclient`` generates from KurrentDB's published
``.proto`` files (``protos``): the optional ``eskit[grpc]`` dependencies.
"""

from __future__ import annotations

from eskit.grpc.server import GrpcServer, GrpcSettings

__all__ = ["GrpcServer", "GrpcSettings"]
