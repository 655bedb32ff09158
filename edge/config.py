"""What a cache node is told: its name and tier, its parents and cache, who it serves.

The defaults are the edge's settings' (:mod:`edge.defaults`); ``livemesh edge`` builds a
node's config from its loaded settings (:func:`edge.main.node_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.defaults import DEFAULTS
from edge.qoe import QoeConfig
from edge.upstream import UpstreamConfig
from kernel.http.server import Limits


@dataclass(frozen=True)
class NodeConfig:
    name: str = "edge"
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)  # parents and timeouts
    limits: Limits = field(default_factory=Limits)  # what a client may send, and how slowly
    cache_bytes: int = DEFAULTS.cache_bytes
    tokens_required: bool = not DEFAULTS.no_tokens
    token_keys: str | None = None  # "kid:hex,..."; required when tokens_required
    admin_key: str | None = None  # bearer secret for pre-positioning; None disables it
    allowed_hosts: tuple[str, ...] = ()  # empty: any Host
    negative_ttl_max_s: float = DEFAULTS.negative_ttl  # one chunk duration
    mpd_stale_s: float = DEFAULTS.mpd_stale  # stale-while-revalidate for manifests without one
    drain_timeout_s: float = DEFAULTS.drain_timeout
    registry: str | None = None  # host:port of the registry service; None: not registered
    tier: str = DEFAULTS.tier  # the registry service name: "edge" or "shield"
    region: str = DEFAULTS.region
    public_url: str | None = None  # how viewers reach this node (default: its listen address)
    capacity_connections: int = DEFAULTS.capacity  # load 1.0 in heartbeats
    qoe: QoeConfig | None = None  # player QoE events to Redis; None: off
