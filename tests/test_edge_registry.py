"""Registry membership of a cache node against the real registry service over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import aiohttp
from tenacity import RetryCallState

from edge.config import NodeConfig
from edge.membership import Load, Membership, MembershipConfig, hot_channels
from edge.node import EdgeNode
from edge.upstream import UpstreamConfig
from kernel.rpc.clients import RpcChannelFactory
from kernel.tokens import new_keys
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc
from services.registry.service import RegistryService
from tests.services.conftest import Metadata, Presenting, Start, factory, start

__all__ = ["factory", "start"]  # the fixtures, used by name


def test_hot_channels_from_cache_keys() -> None:
    keys = ["/live/demo/e1/v1/3.m4s", "/live/demo/manifest.mpd", "/live/news/e2/a/1.m4s", "/vod/x"]
    assert hot_channels(keys) == ["demo", "news"]


async def test_node_registers_heartbeats_drains_and_leaves(
    start: Start,
    factory: RpcChannelFactory,
    node_env: Callable[[str], None],
) -> None:
    node_env("edge-reg")
    running = await start(RegistryService())
    stub = factory.stub(pb_grpc.RegistryServiceStub, running.target)
    node = EdgeNode(
        NodeConfig(
            name="edge-reg",
            upstream=UpstreamConfig(parents=("http://127.0.0.1:9",)),
            registry=running.target,
            tier="edge",
            region="eu-west",
            token_keys=new_keys(),
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


async def test_membership_registers_again_once_the_registry_forgot_it(
    start: Start,
    factory: RpcChannelFactory,
    node_env: Callable[[str], None],
    operator_auth: Metadata,
) -> None:
    """A heartbeat answered NOT_FOUND (the registry expired us) is retried as a registration."""
    node_env("edge-forgotten")
    running = await start(RegistryService())
    # the registry forgets it: an operator removes it
    stub = Presenting(factory.stub(pb_grpc.RegistryServiceStub, running.target), operator_auth)
    config = MembershipConfig(
        registry=running.target,
        instance_id="edge-forgotten",
        service="edge",
        address="http://127.0.0.1:9",
        interval_s=0.05,
    )
    membership = Membership(config, lambda: Load(0.0, True, [], {}))
    registrations: asyncio.Queue[None] = asyncio.Queue()
    register = membership._register

    async def counted() -> None:
        await register()
        registrations.put_nowait(None)

    membership._register = counted  # type: ignore[method-assign]
    membership.start()
    try:
        async with asyncio.timeout(10):
            await registrations.get()
            await stub.DeregisterInstance(pb.DeregisterInstanceRequest(name=membership.name))
            await registrations.get()
        got = await stub.GetInstance(pb.GetInstanceRequest(name=membership.name))
        assert got.instance.instance_id == "edge-forgotten"
    finally:
        await membership.close()


def test_registry_backoff_doubles_with_jitter_up_to_the_interval() -> None:
    """After the n-th failure in a row: b·(1 + U[0, 1)), b = 0.2 s · 2^(n-1) at most 1 s."""
    config = MembershipConfig(registry="127.0.0.1:9", instance_id="e", service="edge", address="")
    membership = Membership(replace(config, interval_s=1.0), lambda: Load(0.0, True, [], {}))
    wait = membership._retrying.wait
    for attempt, base in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)):
        state = RetryCallState(membership._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        waits = [wait(state) for _ in range(200)]
        assert all(base <= w < 2 * base for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > base / 2  # jittered, not fixed
