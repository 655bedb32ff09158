"""Adaptive concurrency limit (Gradient2, after Netflix concurrency-limits) with
priorities: pure logic, the clock and the samples are given to it.

The limit follows the gradient between the long-term RTT (the "no queue" level,
an exponential average over many samples) and the short-term RTT (the average
of the last sample window): when calls start to queue, short > long and the limit
shrinks; when they do not, it grows by ``sqrt(limit)`` per window. Calls beyond
the limit are rejected at once, which is what keeps the accepted calls fast.

Priorities share the one limit: a call of priority ``p`` is admitted while the
in-flight count is below ``limit * shares[p]``, so as load rises the lowest
priority is shed first and CRITICAL (``StartPlayback``) last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.resilience.policy import Priority

DEFAULT_SHARES = {
    Priority.CRITICAL: 1.0,
    Priority.HIGH: 0.9,
    Priority.NORMAL: 0.75,
    Priority.LOW: 0.5,
}


class Gradient2:
    def __init__(
        self, initial: float = 20, min_limit: float = 4, max_limit: float = 500,
        smoothing: float = 0.2, tolerance: float = 1.5, long_window: int = 600,
        sample_window: int = 20,
    ) -> None:
        self.limit = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.long_window = long_window
        self.sample_window = sample_window
        self.long_rtt: float | None = None
        self._long_count = 0
        self._sum = 0.0
        self._count = 0
        self._max_inflight = 0

    def _update_long(self, short: float) -> float:
        if self.long_rtt is None:
            self.long_rtt = short
        else:
            self._long_count += 1
            # warm-up: a plain mean for the first samples, then an exponential average
            n = min(self._long_count + 1, self.long_window)
            self.long_rtt += (short - self.long_rtt) / n
        if self.long_rtt / short > 2.0:  # the floor dropped: let the long RTT follow down
            self.long_rtt *= 0.95
        return self.long_rtt

    def on_sample(self, rtt_s: float, inflight: int) -> float:
        """Add one completed call (its latency, the in-flight count it saw); the new limit."""
        self._sum += rtt_s
        self._count += 1
        self._max_inflight = max(self._max_inflight, inflight)
        if self._count < self.sample_window:
            return self.limit
        short = self._sum / self._count
        max_inflight = self._max_inflight
        self._sum, self._count, self._max_inflight = 0.0, 0, 0
        long = self._update_long(short)
        if max_inflight < self.limit / 2:
            return self.limit  # the application, not the limit, holds concurrency down
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        target = self.limit * gradient + math.sqrt(self.limit)
        limit = self.limit * (1 - self.smoothing) + target * self.smoothing
        self.limit = max(self.min_limit, min(self.max_limit, limit))
        return self.limit


@dataclass
class AdaptiveLimiter:
    """The limit, the in-flight count, and the priority rule that admits against them."""

    algorithm: Gradient2 = field(default_factory=Gradient2)
    shares: dict[Priority, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    inflight: int = 0

    @property
    def limit(self) -> float:
        return self.algorithm.limit

    def try_acquire(self, priority: Priority) -> bool:
        if self.inflight >= self.algorithm.limit * self.shares.get(priority, 1.0):
            return False
        self.inflight += 1
        return True

    def release(self, rtt_s: float, sample: bool = True) -> None:
        """An admitted call ended; ``sample=False`` when its latency says nothing of load
        (it failed before doing work)."""
        inflight = self.inflight
        self.inflight -= 1
        if sample:
            self.algorithm.on_sample(rtt_s, inflight)
