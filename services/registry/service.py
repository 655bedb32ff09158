"""In-memory registry with expiry by missed heartbeats and a streaming Watch.

An instance expires after ``MISSED_HEARTBEATS`` heartbeat intervals without a
heartbeat. One sweeper task sleeps until the earliest expiry (woken early when
the set changes) and removes what is due. Every change is pushed to each
watcher's queue; a watcher too slow to keep ``WATCH_QUEUE`` changes is cut off
(it reconnects and gets a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from kernel.config import DEFAULT_HEARTBEAT_INTERVAL_S as DEFAULT_INTERVAL_S
from kernel.config import RegistrySettings
from kernel.rpc import access, validate
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import InvalidArgument, NotFound, Unavailable
from kernel.rpc.process import Service, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc

MAX_INTERVAL_S = 3600
MISSED_HEARTBEATS = 3
WATCH_QUEUE = 1000


@dataclass
class _Entry:
    instance: pb.Instance
    expires_at: float  # on the monotonic clock


def _check_load(load: float) -> float:
    if not math.isfinite(load) or not 0.0 <= load <= 1.0:
        raise InvalidArgument("load", "must be within [0, 1]")
    return load


def _check_content(content: list[str], field: str) -> list[str]:
    if len(content) > 1000:
        raise InvalidArgument(field, "at most 1000 entries")
    for item in content:
        validate.required(item, field, max_len=200)
    return list(content)


class Registry:
    """The instances, their expiry, and the watchers."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        default_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.default_interval_s = default_interval_s
        self._entries: dict[str, _Entry] = {}
        self._watchers: dict[asyncio.Queue[pb.WatchInstancesResponse | None], str] = {}
        self._wake = asyncio.Event()

    # -- changes ------------------------------------------------------------------

    def _interval(self, instance: pb.Instance) -> float:
        return instance.heartbeat_interval_seconds or self.default_interval_s

    def _touch(self, entry: _Entry) -> None:
        ttl = self._interval(entry.instance) * MISSED_HEARTBEATS
        now_wall = self.wall()
        entry.instance.heartbeat_time.FromNanoseconds(int(now_wall * 1e9))
        entry.instance.expire_time.FromNanoseconds(int((now_wall + ttl) * 1e9))
        entry.expires_at = self.clock() + ttl
        self._wake.set()

    def _publish(self, change: pb.ChangeType, instance: pb.Instance) -> None:
        for queue, service in list(self._watchers.items()):
            if service and service != instance.service:
                continue
            message = pb.WatchInstancesResponse(change_type=change)
            message.instance.CopyFrom(instance)
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._watchers.pop(queue, None)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # tells the stream to end

    def register(self, instance: pb.Instance) -> pb.Instance:
        name = f"instances/{instance.instance_id}"
        stored = pb.Instance()
        stored.CopyFrom(instance)
        stored.name = name
        old = self._entries.get(name)
        if old is not None:
            stored.create_time.CopyFrom(old.instance.create_time)
        else:
            stored.create_time.FromNanoseconds(int(self.wall() * 1e9))
        if stored.health == pb.HEALTH_UNSPECIFIED:
            stored.health = pb.HEALTH_SERVING
        entry = _Entry(stored, 0.0)
        self._entries[name] = entry
        self._touch(entry)
        self._publish(pb.CHANGE_TYPE_MODIFIED if old else pb.CHANGE_TYPE_ADDED, stored)
        return stored

    def heartbeat(self, request: pb.HeartbeatRequest) -> pb.Instance:
        entry = self._entries.get(request.name)
        if entry is None:
            raise NotFound(f"{request.name} is not registered (expired?): register again")
        instance = entry.instance
        instance.load = request.load
        if request.health != pb.HEALTH_UNSPECIFIED:
            instance.health = request.health
        if request.replace_content or request.content:
            del instance.content[:]
            instance.content.extend(request.content)
        self._touch(entry)
        self._publish(pb.CHANGE_TYPE_MODIFIED, instance)
        return instance

    def deregister(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._publish(pb.CHANGE_TYPE_REMOVED, entry.instance)

    def get(self, name: str) -> pb.Instance:
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"{name} not found")
        return entry.instance

    def instances(self, service: str = "", serving_only: bool = False) -> list[pb.Instance]:
        found = [
            e.instance
            for _, e in sorted(self._entries.items())
            if (not service or e.instance.service == service)
            and (not serving_only or e.instance.health == pb.HEALTH_SERVING)
        ]
        return found

    def expire_due(self) -> float | None:
        """Remove expired instances; seconds until the next expiry (None: nothing registered)."""
        now = self.clock()
        for name, entry in list(self._entries.items()):
            if entry.expires_at <= now:
                del self._entries[name]
                self._publish(pb.CHANGE_TYPE_REMOVED, entry.instance)
        if not self._entries:
            return None
        return max(0.0, min(e.expires_at for e in self._entries.values()) - now)

    async def sweep_forever(self) -> None:
        while True:
            self._wake.clear()
            delay = self.expire_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- watchers -------------------------------------------------------------------

    def watch(self, service: str) -> asyncio.Queue[pb.WatchInstancesResponse | None]:
        queue: asyncio.Queue[pb.WatchInstancesResponse | None] = asyncio.Queue(WATCH_QUEUE)
        for instance in self.instances(service):
            message = pb.WatchInstancesResponse(change_type=pb.CHANGE_TYPE_ADDED)
            message.instance.CopyFrom(instance)
            queue.put_nowait(message)
        queue.put_nowait(pb.WatchInstancesResponse(snapshot_complete=True))
        self._watchers[queue] = service
        return queue

    def unwatch(self, queue: asyncio.Queue[pb.WatchInstancesResponse | None]) -> None:
        self._watchers.pop(queue, None)


def _validate_instance(instance: pb.Instance) -> None:
    validate.resource_id(instance.instance_id, "instance.instance_id")
    validate.resource_id(instance.service, "instance.service")
    validate.required(instance.address, "instance.address", max_len=256)
    validate.resource_id(instance.region, "instance.region")
    if instance.zone:
        validate.resource_id(instance.zone, "instance.zone")
    if not math.isfinite(instance.load) or not 0.0 <= instance.load <= 1.0:
        raise InvalidArgument("instance.load", "must be within [0, 1]")
    if not 0 <= instance.heartbeat_interval_seconds <= MAX_INTERVAL_S:
        raise InvalidArgument("instance.heartbeat_interval_seconds", f"must be 0-{MAX_INTERVAL_S}")
    _check_content(list(instance.content), "instance.content")
    if len(instance.labels) > 64:
        raise InvalidArgument("instance.labels", "at most 64 labels")


# why the registry's reads are open
_DIRECTORY = (
    "where serving instances are: edges' addresses are handed to every viewer anyway, and "
    "every process resolves its dependencies here before it holds any credential"
)


def _instance_id(request: pb.HeartbeatRequest | pb.DeregisterInstanceRequest) -> str:
    """The node a heartbeat or a deregistration speaks for."""
    return request.name.removeprefix("instances/")


def _instance_name(name: str) -> str:
    validate.parse_name(name, "name", "instances")
    return name


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @access.node(lambda request: request.instance.instance_id)
    async def RegisterInstance(
        self, request: pb.RegisterInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterInstanceResponse:
        if not request.HasField("instance"):
            raise InvalidArgument("instance", "is required")
        _validate_instance(request.instance)
        validate.request_id(request.request_id)
        return pb.RegisterInstanceResponse(instance=self.registry.register(request.instance))

    @access.node(_instance_id)
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        _instance_name(request.name)
        _check_load(request.load)
        if request.health not in pb.Health.values():
            raise InvalidArgument("health", "unknown value")
        _check_content(list(request.content), "content")
        return pb.HeartbeatResponse(instance=self.registry.heartbeat(request))

    @access.node(_instance_id)
    async def DeregisterInstance(
        self, request: pb.DeregisterInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeregisterInstanceResponse:
        self.registry.deregister(_instance_name(request.name))
        validate.request_id(request.request_id)
        return pb.DeregisterInstanceResponse()

    @access.public(_DIRECTORY)
    async def GetInstance(
        self, request: pb.GetInstanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInstanceResponse:
        return pb.GetInstanceResponse(instance=self.registry.get(_instance_name(request.name)))

    @access.public(_DIRECTORY)
    async def ListInstances(
        self, request: pb.ListInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListInstancesResponse:
        if request.service:
            validate.resource_id(request.service, "service")
        size = validate.page_size(request.page_size, 100, 1000)
        offset = validate.offset_from_token(request.page_token)
        found = self.registry.instances(request.service)[offset : offset + size + 1]
        return pb.ListInstancesResponse(
            instances=found[:size],
            next_page_token=validate.next_offset_token(offset, size, len(found)),
        )

    @access.public(_DIRECTORY)
    async def ResolveInstances(
        self, request: pb.ResolveInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveInstancesResponse:
        validate.resource_id(request.service, "service")
        return pb.ResolveInstancesResponse(
            instances=self.registry.instances(request.service, serving_only=True)
        )

    @access.public(_DIRECTORY)
    async def WatchInstances(
        self, request: pb.WatchInstancesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchInstancesResponse]:
        if request.service:
            validate.resource_id(request.service, "service")
        queue = self.registry.watch(request.service)
        try:
            while True:
                message = await queue.get()
                if message is None:
                    raise Unavailable("watcher fell behind: watch again for a fresh snapshot")
                yield message
        finally:
            self.registry.unwatch(queue)


class RegistryService(Service):
    def __init__(self, default_interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.registry = Registry(default_interval_s=default_interval_s)
        self._sweeper: asyncio.Task[None] | None = None

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["RegistryService"].full_name,
                RegistryServicer(self.registry),
                pb_grpc.add_RegistryServiceServicer_to_server,
            )
        ]

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self.registry.sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


async def build(settings: RegistrySettings, factory: RpcChannelFactory) -> Service:
    return RegistryService(settings.default_heartbeat_interval)


def main(argv: list[str] | None = None) -> int:
    return service_main(RegistrySettings, argv, build)
