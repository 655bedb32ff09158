"""The client half of the layer: every outbound call of a dependency, as one path.

``ResilientChannel`` stands where a ``grpc.aio.Channel`` stands (generated stubs
take it unchanged). A unary call goes:

  deadline (inbound remaining - margin, else the method's default; none left → fail now)
  → bulkhead slot of the dependency (bounded wait)
  → attempt: breaker permit → instance by round robin → call with the remaining time
  → on UNAVAILABLE / RESOURCE_EXHAUSTED, if the call is retry-safe: backoff with full
    jitter (or the server's ``grpc-retry-pushback-ms``), only if it fits before the
    deadline and the retry budget allows, on another instance
  → read-only methods: a hedge to another instance after the method's observed p95
  → on failure, the method's declared fallback, if any.

Here the layer makes one :class:`Dependency` per target (:mod:`.dependency`; its
attempts in :mod:`.attempt`) behind a :class:`ResilientChannel` (:mod:`.channel`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from kernel.rpc.resilience.balancer import Balancer, Connect
from kernel.rpc.resilience.channel import ResilientChannel
from kernel.rpc.resilience.config import ResilienceConfig
from kernel.rpc.resilience.dependency import Dependency
from kernel.rpc.resilience.policy import POLICIES, PolicyTable
from kernel.rpc.resilience.split import from_settings

__all__ = ["ResilienceConfig", "ResilienceLayer", "ResilientChannel"]


class ResilienceLayer:
    """What the channel factory asks for a channel: one :class:`Dependency` per target.

    Targets: ``host:port``, ``host:port,host:port`` (fixed instances) or
    ``registry:///<service>`` (instances resolved from the registry).
    """

    def __init__(
        self, config: ResilienceConfig | None = None, policies: PolicyTable = POLICIES
    ) -> None:
        self.config = config or ResilienceConfig()
        self.policies = policies

    def channel(self, target: str, connect: Connect) -> ResilientChannel:
        config = self.config
        balancer = Balancer(target, connect, config.outliers, config.health_interval_s)
        balancer.split = from_settings()
        if target.startswith("registry:///"):
            service = target.removeprefix("registry:///")
            balancer.dependency = service
            balancer.follow(self._resolver(service, connect), config.resolve_retry_s)
            name = service
        else:
            balancer.set_addresses([a.strip() for a in target.split(",") if a.strip()])
            name = target
        return ResilientChannel(Dependency(name, balancer, config, self.policies))

    def _resolver(
        self,
        service: str,
        connect: Connect,
    ) -> Callable[[], AsyncIterator[list[str]]]:
        """The registry's ``WatchInstances`` for ``service`` as a stream of address sets:
        the serving instances at the end of the snapshot, then after every change."""
        from livemesh.registry.v1 import registry_pb2, registry_pb2_grpc

        registry = ResilientChannel(
            Dependency(
                "registry",
                _static(self.config.registry_target, connect, self.config),
                self.config,
                self.policies,
            )
        )
        stub = registry_pb2_grpc.RegistryServiceStub(registry)  # type: ignore[no-untyped-call]
        removed = registry_pb2.CHANGE_TYPE_REMOVED
        serving = registry_pb2.HEALTH_SERVING

        async def watch() -> AsyncIterator[list[str]]:
            instances: dict[str, Any] = {}
            complete = False
            async for change in stub.WatchInstances(
                registry_pb2.WatchInstancesRequest(service=service)
            ):
                if change.snapshot_complete:
                    complete = True
                elif change.change_type == removed:
                    instances.pop(change.instance.name, None)
                else:
                    instances[change.instance.name] = change.instance
                if complete:
                    yield sorted(i.address for i in instances.values() if i.health == serving)

        return watch


def _static(target: str, connect: Connect, config: ResilienceConfig) -> Balancer:
    balancer = Balancer(target, connect, config.outliers, config.health_interval_s)
    balancer.set_addresses([a.strip() for a in target.split(",") if a.strip()])
    return balancer
