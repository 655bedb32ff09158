"""Settings of the control plane's processes: each gRPC service and the gateway.

Every service takes the same base (:class:`ServiceSettings`: where it listens, its
concurrency limit, Redis, where every other service is) and adds its own keys.
``LIVEMESH_{SERVICE}_PORT`` and ``LIVEMESH_{SERVICE}_TARGET`` are named per service.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kernel.config.base import (
    ProcessSettings,
    RedisSettings,
    ResilienceSettings,
    Settings,
    TokenSettings,
)
from kernel.config.fields import setting
from kernel.config.trust import CredentialSettings, TlsSettings
from kernel.objectstore import DEFAULT_STORE

SERVICE_PORTS = {
    "registry": 50051,
    "identity": 50052,
    "catalog": 50053,
    "search": 50054,
    "profile": 50055,
    "recommend": 50056,
    "playback": 50057,
    "channels": 50058,
    "experiments": 50059,
}
GATEWAY_PORT = 8000  # (8080-8090 are the origin and edges of deploy/local.toml)
DEFAULT_MAX_CONCURRENT_RPCS = 2000
DEFAULT_TOKEN_TTL_S = 3600
DEFAULT_URL_TTL_S = 4 * 3600
DEFAULT_ORIGIN_URL = "http://127.0.0.1:8081"
DEFAULT_HEARTBEAT_INTERVAL_S = 5
DEFAULT_VOD_MAX_BYTES = 4 << 30


def _port(kind: str, default: int) -> Any:
    return setting(
        default,
        env=f"LIVEMESH_{kind.upper()}_PORT",
        flag="--port",
        ge=0,
        le=65535,
        help="0 picks a free port (printed when ready)",
    )


def _target(service: str) -> Any:
    return setting(
        f"127.0.0.1:{SERVICE_PORTS[service]}",
        env=f"LIVEMESH_{service.upper()}_TARGET",
        flag=f"--{service}-target",
        min_length=1,
        help=f"the {service} service, host:port",
    )


class ServiceSettings(
    CredentialSettings, TlsSettings, ResilienceSettings, RedisSettings, ProcessSettings
):
    """The common part of every gRPC service (``kernel.rpc.process.service_main``): its
    TLS files and the credential key it verifies callers with among them."""

    host: str = setting("127.0.0.1", env="LIVEMESH_HOST", flag="--host", help="listen address")
    max_concurrent_rpcs: int = setting(
        DEFAULT_MAX_CONCURRENT_RPCS,
        flag="--max-concurrent-rpcs",
        ge=1,
        help="calls served at once; more are rejected with RESOURCE_EXHAUSTED",
    )
    metrics_port: int = setting(
        0,
        flag="--metrics-port",
        ge=0,
        le=65535,
        help="HTTP port of the Prometheus /metrics listener; 0: none (the gateway serves "
        "/metrics on its own port)",
    )
    registry_target: str = _target("registry")
    identity_target: str = _target("identity")
    catalog_target: str = _target("catalog")
    search_target: str = _target("search")
    profile_target: str = _target("profile")
    recommend_target: str = _target("recommend")
    playback_target: str = _target("playback")
    channels_target: str = _target("channels")
    experiments_target: str = _target("experiments")
    port: int = setting(
        0, flag="--port", ge=0, le=65535, help="0 picks a free port (printed when ready)"
    )


class WorkersSettings(Settings):
    """A process kind that runs as several processes sharing one listening port
    (``kernel/workers.py``): a Python process uses one core at most."""

    # 1 by default: on the 2 shared cores measured, two workers cost 45 % more CPU per
    # press play and did not lift throughput; a pod sets its CPU limit (deploy/k8s)
    workers: int = setting(
        1,
        env="LIVEMESH_WORKERS",
        flag="--workers",
        ge=0,
        le=64,
        help="processes sharing the listening port (SO_REUSEPORT); 0: one per core",
    )


class RegistrySettings(ServiceSettings):
    kind: ClassVar[str] = "registry"
    port: int = _port("registry", SERVICE_PORTS["registry"])
    default_heartbeat_interval: float = setting(
        DEFAULT_HEARTBEAT_INTERVAL_S,
        flag="--default-heartbeat-interval",
        gt=0,
        help="seconds, for instances that do not name theirs",
    )


class DatabaseSettings(Settings):
    """The relational database of a service's transactional records (kernel/db.py)."""

    database_url: str | None = setting(
        None,
        env="LIVEMESH_DATABASE_URL",
        flag="--database-url",
        secret=True,  # a PostgreSQL URL may carry a password
        help="SQLAlchemy async URL: postgresql+asyncpg://user@host/db in production, "
        "sqlite+aiosqlite:///path.db (unset: a SQLite file in a private data directory)",
    )


class IdentitySettings(ServiceSettings, DatabaseSettings):
    kind: ClassVar[str] = "identity"
    port: int = _port("identity", SERVICE_PORTS["identity"])
    token_ttl: int = setting(
        DEFAULT_TOKEN_TTL_S, flag="--token-ttl", gt=0, help="access token lifetime, seconds"
    )


class VodSettings(Settings):
    """Where operators' VOD uploads go (the gateway) and are published from (the catalog)."""

    vod_store: str = setting(
        DEFAULT_STORE,
        env="LIVEMESH_VOD_STORE",
        flag="--vod-store",
        help="object store of the VOD titles and their uploaded sources (a directory or "
        "s3://bucket/prefix[?endpoint=URL])",
    )
    vod_max_bytes: int = setting(
        DEFAULT_VOD_MAX_BYTES,
        env="LIVEMESH_VOD_MAX_BYTES",
        flag="--vod-max-bytes",
        gt=0,
        help="largest VOD source an operator may upload and publish, bytes",
    )


class CatalogSettings(VodSettings, ServiceSettings, DatabaseSettings):
    kind: ClassVar[str] = "catalog"
    port: int = _port("catalog", SERVICE_PORTS["catalog"])


class SearchSettings(ServiceSettings):
    kind: ClassVar[str] = "search"
    port: int = _port("search", SERVICE_PORTS["search"])


class ProfileSettings(ServiceSettings):
    kind: ClassVar[str] = "profile"
    port: int = _port("profile", SERVICE_PORTS["profile"])


class RecommendSettings(ServiceSettings):
    kind: ClassVar[str] = "recommend"
    port: int = _port("recommend", SERVICE_PORTS["recommend"])


class PlaybackSettings(WorkersSettings, TokenSettings, ServiceSettings):
    kind: ClassVar[str] = "playback"
    port: int = _port("playback", SERVICE_PORTS["playback"])
    origin_url: str = setting(
        DEFAULT_ORIGIN_URL,
        env="LIVEMESH_ORIGIN_URL",
        flag="--origin-url",
        pattern=r"^https?://",
        help="base URL players get when no edge is registered; it must understand "
        "/t/{token}/ paths, i.e. be an edge",
    )
    url_ttl: int = setting(
        DEFAULT_URL_TTL_S, flag="--url-ttl", gt=0, help="lifetime of the signed URL tokens, seconds"
    )


class ChannelsSettings(ServiceSettings, DatabaseSettings):
    kind: ClassVar[str] = "channels"
    port: int = _port("channels", SERVICE_PORTS["channels"])
    seed_demo: bool = setting(True, flag="--no-demo", help="do not create channel 'demo'")
    demo_rungs: str = setting(
        "",
        env="LIVEMESH_RUNGS",
        flag="--demo-rungs",
        help="comma-separated video rungs of the default ladder for channel 'demo' (default: all)",
    )


class ExperimentsSettings(ServiceSettings, DatabaseSettings):
    kind: ClassVar[str] = "experiments"
    port: int = _port("experiments", SERVICE_PORTS["experiments"])
    guardrail_interval: float = setting(
        5.0, flag="--guardrail-interval", gt=0, help="seconds between guardrail checks"
    )


class GatewaySettings(VodSettings, WorkersSettings, ServiceSettings):
    kind: ClassVar[str] = "gateway"
    port: int = _port("gateway", GATEWAY_PORT)
    rate: float = setting(50.0, flag="--rate", gt=0, help="requests/s per client")
    burst: float = setting(100.0, flag="--burst", gt=0, help="burst per client")
    cors_origin: str = setting("*", flag="--cors-origin", help="allowed browser origin")


class QoeSettings(RedisSettings, ProcessSettings):
    """``livemesh qoe``: one consumer of the QoE stream; run more to share the load."""

    kind: ClassVar[str] = "qoe"
    consumer: str | None = setting(
        None,
        env="LIVEMESH_QOE_CONSUMER",
        flag="--consumer",
        help="this consumer's name in the group (default: host-pid); reuse it after a restart",
    )
    metrics_host: str = setting("127.0.0.1", flag="--metrics-host", help="/metrics address")
    metrics_port: int = setting(
        9464, flag="--metrics-port", ge=0, le=65535, help="serve Prometheus /metrics here"
    )
    window: int = setting(
        5,
        flag="--window",
        gt=0,
        le=60,
        help="QoE sliding window, seconds: each second, the figures of the last this many",
    )
    batch: int = setting(
        50, flag="--batch", gt=0, le=10_000, help="stream entries per read (each many events)"
    )
    block_ms: int = setting(200, flag="--block-ms", ge=1, le=60_000, help="longest read wait")
    claim_idle_ms: int = setting(
        30_000,
        flag="--claim-idle-ms",
        gt=0,
        help="take over a consumer's pending entries once they are this old (it died)",
    )
