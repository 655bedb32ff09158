"""Registry membership of a cache node against the real registry service over gRPC."""

from __future__ import annotations

import asyncio

import aiohttp

from edge.membership import hot_channels
from edge.node import EdgeNode, NodeConfig
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc
from services.common.clients import ChannelFactory
from services.registry.service import RegistryService
from tests.services.conftest import Start, factory, start

__all__ = ["factory", "start"]  # the fixtures, used by name


def test_hot_channels_from_cache_keys() -> None:
    keys = ["/live/demo/e1/v1/3.m4s", "/live/demo/manifest.mpd", "/live/news/e2/a/1.m4s", "/vod/x"]
    assert hot_channels(keys) == ["demo", "news"]


async def test_node_registers_heartbeats_drains_and_leaves(
    start: Start, factory: ChannelFactory
) -> None:
    running = await start(RegistryService())
    stub = factory.stub(pb_grpc.RegistryServiceStub, running.target)
    node = EdgeNode(
        NodeConfig(
            name="edge-reg",
            parents=("http://127.0.0.1:9",),
            registry=running.target,
            tier="edge",
            region="eu-west",
        )
    )
    await node.start("127.0.0.1", 0)
    try:
        assert node.membership is not None
        async with asyncio.timeout(10):
            await node.membership.registered.wait()
        got = (await stub.GetInstance(pb.GetInstanceRequest(name="instances/edge-reg"))).instance
        assert got.service == "edge" and got.region == "eu-west"
        assert got.address == f"http://127.0.0.1:{node.port}"
        assert got.health == pb.HEALTH_SERVING and "hit_ratio" in got.labels
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{node.port}/healthz") as resp,
        ):
            assert resp.status == 200
        await node.drain()
        got = (await stub.GetInstance(pb.GetInstanceRequest(name="instances/edge-reg"))).instance
        assert got.health == pb.HEALTH_NOT_SERVING
    finally:
        await node.close()
    listed = await stub.ListInstances(pb.ListInstancesRequest(service="edge"))
    assert [i.name for i in listed.instances] == []
