"""The Gossip service: one node, always the leader and alive, at the address the server
listens on, so that ``kurrentdb+discover://`` connection strings find it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc

from eskit.grpc.errors import Context, answered
from eskit.grpc.mapping import uuid_message
from eskit.grpc.protos import gossip_pb2, gossip_pb2_grpc
from eskit.grpc.service import Methods, Service

METHODS: Methods = {"event_store.client.gossip.gossip": {"read": ()}}


def register(server: grpc.aio.Server, service: Service) -> Methods:
    gossip_pb2_grpc.add_GossipServicer_to_server(  # type: ignore[no-untyped-call]
        Gossip(service.host, service.port), server
    )
    return METHODS


class Gossip(gossip_pb2_grpc.GossipServicer):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.instance = uuid.uuid4()

    @answered
    async def Read(self, request: Any, context: Context) -> Any:
        member = gossip_pb2.MemberInfo(
            instance_id=uuid_message(self.instance, structured=False),
            time_stamp=time.time_ns() // 100,
            state=gossip_pb2.MemberInfo.VNodeState.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=self.host, port=self.port),
        )
        return gossip_pb2.ClusterInfo(members=[member])
