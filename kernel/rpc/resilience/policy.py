"""What each method declares: idempotency, read-only (hedgeable), its default
deadline, its priority under load, and its fallback.

A service declares its methods once, in the :data:`POLICIES` table (or a table of
its own handed to the layer)::

    POLICIES.declare("/livemesh.catalog.v1.CatalogService/GetTitle",
                     read_only=True, timeout_s=0.5)
    POLICIES.declare("/livemesh.recommend.v1.RecommendationService/ListRecommendations",
                     read_only=True, fallback=popular_titles)

Mutating methods are retried only when the request carries a non-empty
``request_id`` (AIP-155), which makes a repeat safe.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

Fallback = Callable[[Any], Awaitable[Any] | Any]
# a flash crowd's press-plays wait this long for a slot to playback rather than being
# refused at once; at most a quarter of its 2 s deadline, so the call itself keeps the rest
# (queued to the end of the deadline, calls came late, slow, and opened the breaker)
START_QUEUE_S = 0.5


class Priority(enum.IntEnum):
    """Lower sheds later. ``StartPlayback`` (and every hop it makes) is CRITICAL."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


@dataclass(frozen=True)
class MethodPolicy:
    idempotent: bool = False
    read_only: bool = False  # no side effect at all: may be hedged (implies idempotent)
    timeout_s: float = 2.0  # the deadline when the caller has none to pass on
    priority: Priority = Priority.NORMAL
    fallback: Fallback | None = None
    # how long a call may queue for its dependency's bulkhead slot (within its deadline);
    # None: the bulkhead's own bound. A press-play queues: its viewer would only press again
    queue_s: float | None = None

    def retry_safe(self, request: object) -> bool:
        return self.idempotent or self.read_only or bool(getattr(request, "request_id", ""))


class PolicyTable:
    """Policies by full method name (``/package.Service/Method``), with a default."""

    def __init__(self, default: MethodPolicy | None = None) -> None:
        self.default = default or MethodPolicy()
        self._by_method: dict[str, MethodPolicy] = {}

    def declare(self, method: str, **fields: Any) -> MethodPolicy:
        """Set (or amend) the policy of ``method``."""
        policy = replace(self._by_method.get(method, self.default), **fields)
        if policy.read_only and not policy.idempotent:
            policy = replace(policy, idempotent=True)
        self._by_method[method] = policy
        return policy

    def policy(self, method: str | bytes) -> MethodPolicy:
        name = method.decode() if isinstance(method, bytes) else method
        return self._by_method.get(name, self.default)


def _livemesh_defaults() -> PolicyTable:
    table = PolicyTable()
    read_only = {
        "catalog.v1.CatalogService": ["GetTitle", "BatchGetTitles", "ListTitles"],
        "channels.v1.ChannelService": ["GetChannel", "ListChannels", "CheckStreamKey"],
        "identity.v1.IdentityService": ["VerifyToken", "ListSigningKeys"],
        "profile.v1.ProfileService": ["GetProfile", "ListProfiles", "ListViews"],
        "recommend.v1.RecommendationService": ["ListRecommendations"],
        "registry.v1.RegistryService": ["GetInstance", "ListInstances", "ResolveInstances"],
        "search.v1.SearchService": ["SearchTitles"],
        "experiments.v1.ExperimentService": ["GetExperiment", "ListExperiments", "GetReadout"],
        "playback.v1.PlaybackService": ["ListEdges"],
    }
    for service, methods in read_only.items():
        for method in methods:
            table.declare(f"/livemesh.{service}/{method}", read_only=True, timeout_s=1.0)
    # an operator's publication: its start checks the store and the catalog before it
    # answers, its poll reads memory; nobody's playback waits on either, so a loaded
    # catalog gets the default deadline and more, not a viewer's 1 s
    catalog = "/livemesh.catalog.v1.CatalogService"
    table.declare(f"{catalog}/GetVodPublication", read_only=True, timeout_s=2.0)
    table.declare(f"{catalog}/PublishVodTitle", timeout_s=10.0)
    # a heartbeat repeats the same absolute state: safe to send twice
    table.declare("/livemesh.registry.v1.RegistryService/Heartbeat", idempotent=True)
    table.declare("/livemesh.playback.v1.PlaybackService/HeartbeatPlayback", idempotent=True)
    table.declare(
        "/livemesh.playback.v1.PlaybackService/StartPlayback",
        priority=Priority.CRITICAL,
        queue_s=START_QUEUE_S,
    )
    # an experiment's definition, start and stop repeat to the same state; an account's
    # cell is a function, and its exposure counts the account once however often it comes
    for method in ("CreateExperiment", "StartExperiment", "StopExperiment", "AssignCell"):
        table.declare(f"/livemesh.experiments.v1.ExperimentService/{method}", idempotent=True)
    table.declare("/livemesh.experiments.v1.ExperimentService/LogExposure", idempotent=True)
    table.declare("/livemesh.identity.v1.IdentityService/SignIn", priority=Priority.HIGH)
    table.declare("/livemesh.profile.v1.ProfileService/RecordView", priority=Priority.LOW)
    table.declare("/grpc.health.v1.Health/Check", read_only=True, timeout_s=1.0)
    return table


POLICIES = _livemesh_defaults()
