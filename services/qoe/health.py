"""The last whole window's figures: Prometheus gauges, and each edge's QoE health hash
(``lm:{qoe}:health:{edge}``, :mod:`kernel.keys`) for the registry and steering to read.

The window slides: every second it is the last ``window_s`` whole seconds, ending
``SETTLE_S`` before now. Why sliding rather than back-to-back windows: steering must
avoid a degraded edge within 10 s and give it traffic back within 30 s of recovering,
and a fixed window tells of a change only once it has ended (up to two windows late: 10 s
windows missed the target, 2 s ones met it on a few requests each). A 5 s window that
moves each second tells within about 2 s of a second's end, on the samples of 5 s: an
edge is judged on enough requests (``DemotionPolicy.min_requests``) to mean something.
(bench/qoe.py, load ~20 on 2 cores: new sessions avoid a degraded edge 5.7-6.2 s after
its latency begins, traffic is back 9.3-10.8 s after it ends.) A second's events still
arrive after it ends (edge batches of up to 100 ms, the consumer's read), hence the
settling second before a window is read.

Every processor reads the same seconds from Redis, so each one's /metrics tells the same
figures and their health writes agree, whichever consumer counted which event.
"""

from __future__ import annotations

from dataclasses import asdict

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis

from kernel import clock
from kernel.keys import QOE_WINDOW_S, qoe_health, qoe_second, qoe_sessions
from services.qoe.aggregate import Figures, edges, figures, window_sums
from services.qoe.consumer import WINDOWS_KEPT

FIGURES = {
    "rebuffer_ratio": "share of requests whose player reported a starved buffer",
    "startup_share": "share of requests made while the player was starting",
    "startup_ms": "mean time to first byte of requests made while starting, ms",
    "bitrate_kbps": "mean encoded bitrate requested (CMCD br), kbps",
    "throughput_kbps": "mean throughput the players measured (CMCD mtp), kbps",
    "error_rate": "share of requests answered with an error",
    "ttfb_ms": "mean time to first byte at the edge, ms",
    "requests": "requests in the window",
    "score": "QoE score 0..1 (edges only)",
}
HEALTH_WINDOWS = 3  # an edge's health hash outlives its last window by this many
SETTLE_S = 1  # a second is read this long after it ends (its stragglers counted)


class Health:
    def __init__(self, redis: Redis, window_s: int, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.window_s = window_s
        self.gauges = {
            name: Gauge(f"livemesh_qoe_{name}", help_, ("dimension", "value"), registry=registry)
            for name, help_ in FIGURES.items()
        }

    def last_window(self) -> int:
        """The start (s) of the newest whole window: ``window_s`` seconds that ended
        ``SETTLE_S`` ago."""
        return clock.now_ms() // 1000 - SETTLE_S - self.window_s

    async def update(self) -> dict[str, Figures]:
        """Read the last whole window, export it, write each edge's health; its edges."""
        start = self.last_window()
        pipe = self.redis.pipeline(transaction=False)
        for second in range(start, start + self.window_s):
            pipe.hgetall(qoe_second(second))
        found = figures(window_sums(await pipe.execute()))
        for gauge in self.gauges.values():
            gauge.clear()
        for (dim, value), f in found.items():
            for name, number in asdict(f).items():
                self.gauges[name].labels(dim, value).set(number)
            if dim == "edge":
                self.gauges["score"].labels(dim, value).set(f.score)
        per_edge = edges(found.items())
        pipe = self.redis.pipeline(transaction=False)
        # how long the windows are, for as long as their seconds are kept (the console's chart)
        pipe.set(QOE_WINDOW_S, self.window_s, ex=self.window_s * WINDOWS_KEPT)
        await pipe.execute()
        if per_edge:
            sessions = await self.sessions(start, list(per_edge))
            pipe = self.redis.pipeline(transaction=False)
            for edge, f in per_edge.items():
                key = qoe_health(edge)
                record = {
                    **asdict(f),
                    "score": f.score,
                    "sessions": sessions[edge],
                    "window": start,
                    "window_s": self.window_s,
                }
                pipe.hset(key, mapping={k: str(v) for k, v in record.items()})
                pipe.expire(key, self.window_s * HEALTH_WINDOWS)
            await pipe.execute()
        return per_edge

    async def sessions(self, start: int, names: list[str]) -> dict[str, int]:
        """Each edge's distinct sessions over the window that starts at ``start`` (the
        union of its seconds' HyperLogLogs: about 1 % off, exact for a few)."""
        pipe = self.redis.pipeline(transaction=False)
        seconds = range(start, start + self.window_s)
        for edge in names:
            pipe.pfcount(*(qoe_sessions(second, edge) for second in seconds))
        return {edge: int(n) for edge, n in zip(names, await pipe.execute(), strict=True)}
