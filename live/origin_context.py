"""What the origin's handlers share: Redis, the chunk fan-out and the metrics, reached
through the app (:data:`ORIGIN`), and the one reading of a channel name off a request.

Below the handler modules and the app so that each handler module can reach them without
importing the app that mounts it.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from kernel.channel_config import NAME_PATTERN
from kernel.objectstore import ObjectStore
from live.fanout import ChunkFanout
from live.http_errors import BadRequest
from live.state import ChannelStore


class OriginMetrics:
    """Counters of one app, in their own registry so several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.responses = Counter(
            "livemesh_origin_responses",
            "HTTP responses by status",
            ["status"],
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "livemesh_origin_media_bytes", "media and manifest bytes sent", registry=self.registry
        )
        self.held = Gauge(
            "livemesh_origin_held_requests",
            "requests waiting for a segment's first chunk",
            registry=self.registry,
        )
        self.streaming = Gauge(
            "livemesh_origin_streaming_responses",
            "segments being streamed as produced",
            registry=self.registry,
        )


class Origin:
    """What the handlers share: Redis, the chunk fan-out, the metrics, the UTCTiming URLs."""

    def __init__(
        self,
        redis: aioredis.Redis,
        time_urls: list[str],
        archive: ObjectStore | None = None,
        dvr_s: int = 0,
    ) -> None:
        """``archive``: where live events are archived (:mod:`live.origin_archive`), offered
        to players ``dvr_s`` back (the MPD's time-shift buffer) when that is longer than
        the live window."""
        self.redis = redis
        self.time_urls = time_urls
        self.archive = archive
        self.dvr_s = dvr_s if archive is not None else 0
        self.fanout = ChunkFanout(redis)
        self.metrics = OriginMetrics()

    def store(self, channel: str) -> ChannelStore:
        return ChannelStore(self.redis, channel)


ORIGIN = web.AppKey("origin", Origin)


def channel_name(request: web.Request) -> str:
    channel = request.match_info["channel"]
    if not NAME_PATTERN.match(channel):
        raise BadRequest("invalid channel name")
    return channel
