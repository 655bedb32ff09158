"""Settings of the data plane's processes: origin, edge (and shield), channel, ingest.

Field names are the ``argparse`` destinations those commands use today, so a loaded
settings object reads like their ``args`` (``settings.time_urls``, ``settings.parent``).
Their loop defaults to asyncio's where the process ran on it before (origin, channel,
ingest); ``LIVEMESH_UVLOOP=on`` moves them to uvloop.

The defaults written here are the only ones: the edge's config dataclasses take theirs
from :class:`EdgeSettings` (the kernel cannot import the edge, so the direction is this
one), and the edge's client head timeout is the lean HTTP server's own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from kernel.config.base import LogLevel, OnOff, ProcessSettings, RedisSettings, TokenSettings
from kernel.config.fields import setting
from kernel.config.trust import NodeCredentialSettings, TlsSettings
from kernel.http.server import Limits
from kernel.objectstore import DEFAULT_STORE


def _port(default: int | None, flag: str = "--port", help: str = "listen port") -> Any:
    return setting(default, flag=flag, ge=0, le=65535, help=help)


def _seconds(default: float, flag: str, help: str = "") -> Any:
    return setting(default, flag=flag, gt=0, help=help)


class OriginSettings(RedisSettings, ProcessSettings):
    kind: ClassVar[str] = "origin"
    uvloop: OnOff = setting("off", env="LIVEMESH_UVLOOP", help="run on uvloop, else asyncio's")
    host: str = setting("127.0.0.1", flag="--host", help="listen address")
    port: int = _port(8080)
    time_urls: list[str] = setting(
        [],
        flag="--time-url",
        help="a UTCTiming URL players sync with (every edge answers /time); repeat it for "
        "more sources, tried in order; default: /time on the Host of the request",
    )
    vod_store: str = setting(
        DEFAULT_STORE,
        env="LIVEMESH_VOD_STORE",
        flag="--vod-store",
        help="object store of the VOD titles served under /vod/ (a directory or "
        "s3://bucket/prefix[?endpoint=URL])",
    )
    dvr_s: int = setting(
        0,
        env="LIVEMESH_DVR_S",
        flag="--dvr-s",
        help="how far back (s) the live MPD lets players seek, older segments served from "
        "the archive in the VOD store (livemesh vod archive); 0: the live window only",
    )


class EdgeSettings(
    NodeCredentialSettings, TlsSettings, TokenSettings, RedisSettings, ProcessSettings
):
    """A cache node; its TLS files and node credential are for the registry's calls, its
    Redis for the players' QoE events (``--qoe``)."""

    kind: ClassVar[str] = "edge"
    log_level: LogLevel = setting(
        "INFO", env="LIVEMESH_LOG_LEVEL", flag="--log-level", help="logging level"
    )
    host: str = setting("127.0.0.1", flag="--host", help="listen address")
    port: int = _port(8080)
    name: str | None = setting(None, flag="--name", help="node name in metrics and the registry")
    parent: list[str] = setting(
        [],
        flag="--parent",
        help="a parent (shield or origin); repeat: objects spread by rendezvous hashing",
    )
    fallback: list[str] = setting(
        [],
        flag="--fallback",
        help="tried in the given order after every --parent failed (e.g. the origin)",
    )
    cache_bytes: int = setting(512 << 20, flag="--cache-bytes", gt=0, help="cache size, bytes")
    no_tokens: bool = setting(
        False,
        flag="--no-tokens",
        help="serve without tokens (a shield behind edges); given tokens are checked",
    )
    token_keys: str | None = setting(
        None,
        env="LIVEMESH_TOKEN_KEYS",
        flag="--token-keys",
        secret=True,
        help="kid:hexsecret,... (no default: required unless --no-tokens)",
    )
    admin_key: str | None = setting(
        None,
        env="LIVEMESH_EDGE_ADMIN_KEY",
        flag="--admin-key",
        secret=True,
        help="bearer secret for POST /admin/preposition (unset: that API is off)",
    )
    allowed_host: list[str] = setting(
        [], flag="--allowed-host", help="accept only these Host names (repeat); default any"
    )
    negative_ttl: float = _seconds(
        0.2, "--negative-ttl", "longest a 404/410 is cached, seconds (one chunk duration)"
    )
    mpd_stale: float = setting(
        2.0,
        flag="--mpd-stale",
        ge=0,
        help="serve a manifest this long past its max-age while revalidating",
    )
    head_timeout: float = _seconds(
        5.0,
        "--head-timeout",
        "wait this long for a parent's response head to a request no parent holds "
        "(a live segment may be held: --hold plus 2 x --hold-margin)",
    )
    hold: float = _seconds(
        4.0,
        "--hold",
        "longest the origin holds a request for the next segment (2 segment durations)",
    )
    hold_margin: float = setting(
        1.0,
        flag="--hold-margin",
        ge=0,
        help="what each tier adds to the wait for a held segment's head",
    )
    stall_timeout: float = _seconds(
        3.0, "--stall-timeout", "silence mid-body that counts as a dead parent, seconds"
    )
    drain_timeout: float = setting(
        30.0, flag="--drain-timeout", ge=0, help="on SIGTERM, longest to finish answers, seconds"
    )
    # the lean HTTP server's own default, so a node built in code gets the same
    client_head_timeout: float = _seconds(
        Limits.head_timeout_s,
        "--client-head-timeout",
        "longest a viewer may take to send a request's head, seconds",
    )
    registry: str | None = setting(
        None,
        env="LIVEMESH_REGISTRY",
        flag="--registry",
        help="registry service host:port; register and heartbeat there",
    )
    tier: Literal["edge", "shield"] = setting(
        "edge", flag="--tier", help="the service this node registers as"
    )
    region: str = setting("local", flag="--region", help="the region it registers in")
    public_url: str | None = setting(
        None, flag="--public-url", help="the URL viewers use for this node"
    )
    capacity: int = setting(10_000, flag="--capacity", gt=0, help="connections at load 1.0")
    qoe: OnOff = setting(
        "off",
        env="LIVEMESH_EDGE_QOE",
        flag="--qoe",
        help="send players' CMCD with each answer's figures to the QoE stream in --redis-url",
    )
    qoe_batch: int = setting(500, flag="--qoe-batch", gt=0, le=10_000, help="events per XADD batch")
    qoe_flush_ms: float = setting(
        100.0, flag="--qoe-flush-ms", gt=0, le=10_000, help="longest an event waits, ms"
    )
    qoe_ring: int = setting(
        50_000,
        flag="--qoe-ring",
        gt=0,
        le=1_000_000,
        help="events held while Redis is slow or down; past it the oldest are dropped",
    )


class _ChannelRunner(RedisSettings, ProcessSettings):
    """A process that runs channels: each as the channels service created it (its ladder,
    segment, chunk and window are the channel's record, not settings of the process)."""

    uvloop: OnOff = setting("off", env="LIVEMESH_UVLOOP", help="run on uvloop, else asyncio's")


# a channel's redundant pipelines (live/pipelines.py), in order of preference
Pipeline = Literal["a", "b"]


class ChannelSettings(_ChannelRunner):
    """``livemesh channel NAME``: NAME stays the command's operand, not a setting. The
    pipeline is a setting, so that ``livemesh health`` in a pipeline's pod (which reads
    the process's command line) knows its flag."""

    kind: ClassVar[str] = "channel"
    metrics_port: int | None = _port(
        None, "--metrics-port", "serve Prometheus metrics on this port"
    )
    pipeline: Pipeline | None = setting(
        None,
        flag="--pipeline",
        help="run as one of the channel's redundant pipelines, a or b (unset: its only one)",
    )


class IngestSettings(_ChannelRunner):
    kind: ClassVar[str] = "ingest"
    channel: list[str] = setting(
        [], flag="--channel", help="channel id, on air from the start (repeat)"
    )
    any_channel: bool = setting(
        False,
        flag="--any-channel",
        help="also take any other created channel, on air from its first broadcaster",
    )
    not_channel: list[str] = setting(
        [],
        flag="--not-channel",
        help="never take this channel (another packager runs it; repeat)",
    )
    host: str = setting("0.0.0.0", flag="--host", help="listen address")
    # 8070: clear of deploy/local.toml's origin, edges and shield (8080-8090)
    http_port: int = _port(8070, "--http-port", "WHIP endpoint port")
    rtmp_port: int = _port(1935, "--rtmp-port", "RTMP port")
    dev_key: list[str] = setting(
        [],
        flag="--dev-key",
        secret=True,
        help="CHANNEL=KEY: issue a stream key at start (local demo only; the channels "
        "service owns keys)",
    )
