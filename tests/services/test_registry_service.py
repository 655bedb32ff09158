"""Registry: register, heartbeat, resolve, expiry by missed heartbeats, Watch."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kernel.rpc.clients import RpcChannelFactory
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc
from services.registry.service import RegistryService
from tests.services.conftest import Metadata, Presenting, Start, expect_error


def edge(instance_id: str, region: str = "eu-west", load: float = 0.1) -> pb.Instance:
    return pb.Instance(
        instance_id=instance_id,
        service="edge",
        address=f"http://127.0.0.1:1/{instance_id}",
        region=region,
        load=load,
        content=["demo"],
    )


async def test_register_get_list_resolve_heartbeat_deregister(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    running = await start(RegistryService())
    stub = Presenting(factory.stub(pb_grpc.RegistryServiceStub, running.target), operator_auth)
    for i in range(3):
        await stub.RegisterInstance(pb.RegisterInstanceRequest(instance=edge(f"e{i}")))
    got = (await stub.GetInstance(pb.GetInstanceRequest(name="instances/e1"))).instance
    assert got.address.endswith("/e1") and got.health == pb.HEALTH_SERVING
    assert got.expire_time.seconds > got.heartbeat_time.seconds

    page1 = await stub.ListInstances(pb.ListInstancesRequest(service="edge", page_size=2))
    page2 = await stub.ListInstances(
        pb.ListInstancesRequest(service="edge", page_size=2, page_token=page1.next_page_token)
    )
    assert [i.name for i in page1.instances] + [i.name for i in page2.instances] == [
        "instances/e0",
        "instances/e1",
        "instances/e2",
    ]
    assert page2.next_page_token == ""

    hb = await stub.Heartbeat(
        pb.HeartbeatRequest(name="instances/e2", load=0.9, health=pb.HEALTH_NOT_SERVING)
    )
    assert hb.instance.load == 0.9
    resolved = await stub.ResolveInstances(pb.ResolveInstancesRequest(service="edge"))
    assert [i.name for i in resolved.instances] == ["instances/e0", "instances/e1"]

    await stub.DeregisterInstance(pb.DeregisterInstanceRequest(name="instances/e0"))
    await expect_error(
        stub.GetInstance(pb.GetInstanceRequest(name="instances/e0")), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        stub.Heartbeat(pb.HeartbeatRequest(name="instances/e0")), grpc.StatusCode.NOT_FOUND
    )


async def test_bad_input_names_the_field(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    running = await start(RegistryService())
    stub = Presenting(factory.stub(pb_grpc.RegistryServiceStub, running.target), operator_auth)
    bad = edge("Bad Id")
    await expect_error(
        stub.RegisterInstance(pb.RegisterInstanceRequest(instance=bad)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "instance.instance_id",
    )
    await expect_error(
        stub.RegisterInstance(pb.RegisterInstanceRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "instance",
    )
    overloaded = pb.RegisterInstanceRequest(instance=edge("a", load=2))
    await expect_error(
        stub.RegisterInstance(overloaded), grpc.StatusCode.INVALID_ARGUMENT, "instance.load"
    )
    await expect_error(
        stub.Heartbeat(pb.HeartbeatRequest(name="edges/x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    )
    await expect_error(
        stub.ListInstances(pb.ListInstancesRequest(page_token="%%%")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_error(
        stub.ResolveInstances(pb.ResolveInstancesRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "service",
    )


async def test_watch_streams_snapshot_changes_and_expiry(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    # instances that name no interval use the registry's: 50 ms, so expiry after 150 ms
    running = await start(RegistryService(default_interval_s=0.05))
    stub = Presenting(factory.stub(pb_grpc.RegistryServiceStub, running.target), operator_auth)
    await stub.RegisterInstance(
        pb.RegisterInstanceRequest(
            instance=pb.Instance(
                instance_id="old",
                service="edge",
                address="a",
                region="r",
                heartbeat_interval_seconds=60,
            )
        )
    )
    watch = stub.WatchInstances(pb.WatchInstancesRequest(service="edge"), timeout=10)
    first = await watch.read()
    assert first.change_type == pb.CHANGE_TYPE_ADDED and first.instance.name == "instances/old"
    assert (await watch.read()).snapshot_complete

    await stub.RegisterInstance(pb.RegisterInstanceRequest(instance=edge("short")))
    added = await watch.read()
    assert (added.change_type, added.instance.name) == (pb.CHANGE_TYPE_ADDED, "instances/short")
    # no more heartbeats: it expires, and the watcher is told
    removed = await watch.read()
    assert (removed.change_type, removed.instance.name) == (
        pb.CHANGE_TYPE_REMOVED,
        "instances/short",
    )
    listed = await stub.ListInstances(pb.ListInstancesRequest())
    assert [i.name for i in listed.instances] == ["instances/old"]
    watch.cancel()


async def test_health_and_reflection(
    start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    running = await start(RegistryService())
    channel = factory.channel(running.target)
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="livemesh.registry.v1.RegistryService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    stream = reflect.ServerReflectionInfo(timeout=5)
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await stream.read()
    await stream.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert "livemesh.registry.v1.RegistryService" in names
    assert "grpc.health.v1.Health" in names
