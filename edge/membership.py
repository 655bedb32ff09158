"""Registry membership (DESIGN.md §5): register, heartbeat health and load, drain, leave.

The registry is the control plane: when it is down the node keeps serving, and
keeps trying, with backoff (tenacity); it never waits for the registry on a request path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random_exponential,
)

from kernel.config import NodeCredentialSettings, load
from kernel.rpc.auth import bearer_metadata
from kernel.rpc.clients import RpcChannelFactory
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
CHANNEL_OF = re.compile(r"^/live/([^/]+)/")
MAX_CONTENT = 64
FIRST_BACKOFF_S = 0.2


def configured_credential() -> str:
    """The node's credential setting (``LIVEMESH_NODE_CREDENTIAL``); empty when unset."""
    return load(NodeCredentialSettings).settings.node_credential or ""


@dataclass(frozen=True)
class MembershipConfig:
    registry: str  # host:port of the registry service
    instance_id: str
    service: str  # "edge" or "shield"
    address: str  # the node's http:// base URL
    region: str = "local"
    zone: str = ""
    interval_s: float = 2.0
    labels: dict[str, str] = field(default_factory=dict)
    # the node credential (a JWT naming this node) the registry asks of every node call
    credential: str = field(default_factory=configured_credential)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.credential) if self.credential else ()


@dataclass(frozen=True)
class Load:
    """What a heartbeat reports, read from the node when it is sent."""

    load: float  # in [0, 1]
    serving: bool
    content: list[str]
    labels: dict[str, str]


def hot_channels(keys: list[str]) -> list[str]:
    """The live channels with objects in cache, from the cache keys."""
    seen: dict[str, None] = {}
    for key in keys:
        match = CHANNEL_OF.match(key)
        if match:
            seen[match.group(1)] = None
            if len(seen) >= MAX_CONTENT:
                break
    return list(seen)


class Membership:
    def __init__(self, config: MembershipConfig, read_load: Callable[[], Load]) -> None:
        self.config = config
        self.read_load = read_load
        self.name = f"instances/{config.instance_id}"
        self.factory = RpcChannelFactory()
        self.registered = asyncio.Event()
        self.heartbeats = 0
        self._task: asyncio.Task[None] | None = None
        # after a failed call: wait b·(1 + U[0, 1)), b doubling from FIRST_BACKOFF_S up to
        # the heartbeat interval (b + a uniform draw in [0, b)); forever, the node keeps serving
        backoff = wait_exponential(multiplier=FIRST_BACKOFF_S, max=config.interval_s)
        jitter = wait_random_exponential(multiplier=FIRST_BACKOFF_S, max=config.interval_s)
        self._retrying = AsyncRetrying(
            retry=retry_if_exception_type(grpc.aio.AioRpcError),
            wait=backoff + jitter,
            before_sleep=self._failed,
        )

    def _stub(self) -> pb_grpc.RegistryServiceStub:
        return self.factory.stub(pb_grpc.RegistryServiceStub, self.config.registry)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _register(self) -> None:
        cfg, now = self.config, self.read_load()
        instance = pb.Instance(
            instance_id=cfg.instance_id,
            service=cfg.service,
            address=cfg.address,
            region=cfg.region,
            zone=cfg.zone,
            load=now.load,
            health=pb.HEALTH_SERVING if now.serving else pb.HEALTH_NOT_SERVING,
            content=now.content,
            heartbeat_interval_seconds=max(1, round(cfg.interval_s)),
            labels={**cfg.labels, **now.labels},
        )
        request_id = f"register-{cfg.instance_id}-{random.getrandbits(64):016x}"
        await self._stub().RegisterInstance(
            pb.RegisterInstanceRequest(instance=instance, request_id=request_id),
            metadata=cfg.metadata,
        )
        self.registered.set()

    async def heartbeat(self) -> None:
        now = self.read_load()
        await self._stub().Heartbeat(
            pb.HeartbeatRequest(
                name=self.name,
                load=now.load,
                health=pb.HEALTH_SERVING if now.serving else pb.HEALTH_NOT_SERVING,
                content=now.content,
                replace_content=True,
            ),
            metadata=self.config.metadata,
        )
        self.heartbeats += 1

    async def _beat(self) -> None:
        """Register when not (or no longer) registered, else heartbeat."""
        if not self.registered.is_set():
            await self._register()
        else:
            await self.heartbeat()

    def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if not isinstance(exc, grpc.aio.AioRpcError):
            return
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            self.registered.clear()  # expired while we were away: register again
        log.warning("registry: %s %s", exc.code().name, exc.details())

    async def _run(self) -> None:
        while True:
            await self._retrying(self._beat)
            await asyncio.sleep(self.config.interval_s)

    async def drain(self) -> None:
        """Tell the registry at once that this node takes no new viewers."""
        try:
            await self.heartbeat()
        except grpc.aio.AioRpcError as exc:
            log.warning("registry (drain): %s", exc.code().name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.registered.is_set():
            try:
                await self._stub().DeregisterInstance(
                    pb.DeregisterInstanceRequest(name=self.name), metadata=self.config.metadata
                )
            except grpc.aio.AioRpcError as exc:
                log.warning("registry (leave): %s", exc.code().name)
        await self.factory.close()
