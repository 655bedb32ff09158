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

Queueing the in-flight count cannot see: a CPU-bound handler runs to its end in
one step of the event loop, so the in-flight count stays at one while calls wait
in front of the loop (in gRPC's core, then in the loop's ready queue). Each call
therefore also brings how long it has already waited (``waited_s``: the timeout
its caller sent minus what is left of it on arrival at the handler). A call that
waited longer than ``tolerance`` times the service time (an exponential
average of the handlers' own time, without the wait) is rejected at once, the
threshold scaled by its priority's share; the limit's samples are the whole
sojourn (wait + service), so Gradient2 shrinks the limit under queueing too.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kernel.rpc.resilience.policy import Priority

DEFAULT_SHARES = {
    Priority.CRITICAL: 1.0,
    Priority.HIGH: 0.9,
    Priority.NORMAL: 0.75,
    Priority.LOW: 0.5,
}
# a shed call's retry hint, before its jitter (x0.5 to x1.5): never sooner than this (a
# retry must find the queue drained), never later than this (a viewer is waiting)
MIN_RETRY_S = 0.1
MAX_RETRY_S = 2.0
SHED_MEMORY_S = 1.0  # the time constant over which recent sheds are counted


class Gradient2:
    def __init__(
        self,
        initial: float = 20,
        min_limit: float = 4,
        max_limit: float = 500,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
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
class QueueWait:
    """The wait rule (after CoDel): shed calls that queued too long, but only while a
    standing queue exists, so a burst or a stalled process does not shed.

    The target wait is ``tolerance`` service times (at least ``min_wait_s``). Shedding
    starts when every call of an ``interval_s`` waited longer than the target, and
    stops after an interval in which no call had to be shed. While it lasts, a call of
    priority share ``s`` is shed if it waited more than ``s`` times :meth:`shed_above_s`:
    the floor there is only ``drain_floor`` of ``min_wait_s``. The floor keeps the
    machine's noise from *starting* to shed; once a queue stands, the calls worth
    serving are those that waited least (every call above the floor is served after
    waiting about the floor: at 3x a quiet machine's p99 of accepted calls came to
    ~1.9x unloaded), and the bound only has to stay above what a busy server makes a
    fresh call wait anyway (about one service time), or the server would idle."""

    tolerance: float = 1.0
    # below the machine's scheduling noise a wait says nothing (a shared 2-core box stalls
    # a process for 10-20 ms); 25 ms is the p99 budget of a whole StartPlayback (DESIGN §7)
    min_wait_s: float = 0.025
    drain_floor: float = 0.5
    interval_s: float = 0.1
    smoothing: float = 0.05
    clock: Callable[[], float] = time.monotonic
    service_s: float | None = None  # average time in the handler (no wait), once known
    shedding: bool = False
    _interval_end: float | None = None
    _min_wait: float = math.inf
    _shed: bool = False

    def target_s(self) -> float:
        if self.service_s is None:
            return math.inf  # nothing learned yet: no basis to judge a wait
        return max(self.min_wait_s, self.tolerance * self.service_s)

    def shed_above_s(self) -> float:
        """While shedding: the wait above which a call is shed (at its share 1)."""
        if self.service_s is None:
            return math.inf
        return max(self.drain_floor * self.min_wait_s, self.tolerance * self.service_s)

    def admit(self, waited_s: float | None, share: float = 1.0) -> bool:
        """Whether a call that ``waited_s`` before its handler (None: unknown) may run."""
        if waited_s is None:
            return True
        now = self.clock()
        if self._interval_end is None or now >= self._interval_end:
            if self._interval_end is not None:
                if self.shedding:
                    self.shedding = self._shed
                else:
                    # (an interval without a known wait is no evidence of a queue)
                    self.shedding = math.inf > self._min_wait > self.target_s()
            self._interval_end = now + self.interval_s
            self._min_wait, self._shed = math.inf, False
        self._min_wait = min(self._min_wait, waited_s)
        if self.shedding and waited_s > self.shed_above_s() * share:
            self._shed = True
            return False
        return True

    def served(self, service_s: float) -> None:
        if self.service_s is None:
            self.service_s = service_s
        else:
            self.service_s += (service_s - self.service_s) * self.smoothing


@dataclass
class AdaptiveLimiter:
    """The limit, the in-flight count, and the priority rule that admits against them."""

    algorithm: Gradient2 = field(default_factory=Gradient2)
    shares: dict[Priority, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    inflight: int = 0
    queue: QueueWait = field(default_factory=lambda: QueueWait())
    recent_sheds: float = 0.0  # sheds of about the last SHED_MEMORY_S (decaying count)
    _shed_at: float | None = None

    @property
    def limit(self) -> float:
        return self.algorithm.limit

    def try_acquire(self, priority: Priority, waited_s: float | None = None) -> bool:
        share = self.shares.get(priority, 1.0)
        if self.inflight >= self.algorithm.limit * share:
            return False
        if not self.queue.admit(waited_s, share):
            return False
        self.inflight += 1
        return True

    def why_shed(self, waited_s: float | None) -> str:
        """Which rule turned away a call that ``waited_s`` (for its RESOURCE_EXHAUSTED)."""
        queue = self.queue
        if queue.shedding and waited_s is not None and waited_s > queue.shed_above_s():
            return f"queued {waited_s * 1000:.0f} ms"
        return f"concurrency limit {self.limit:.0f}"

    def retry_after_s(self, waited_s: float | None, rng: random.Random | None = None) -> float:
        """When a call shed now (counted here: call once per shed) should come back: when
        the work in front of it will be done, jittered (x0.5 to x1.5) so the callers shed
        together do not return together. That work is the longest of: the queue it waited
        in, the in-flight calls' service, and serving every caller shed lately (they all
        come back: a flash crowd's first refusals said "come back in 30 ms", the crowd
        did, and was refused again); bounded by ``MIN_RETRY_S`` and ``MAX_RETRY_S`` before
        the jitter."""
        now = self.queue.clock()
        if self._shed_at is not None:
            self.recent_sheds *= math.exp(-(now - self._shed_at) / SHED_MEMORY_S)
        self._shed_at = now
        self.recent_sheds += 1.0
        service_s = self.queue.service_s or 0.0
        backlog = max(
            waited_s or 0.0,
            service_s * self.inflight / max(1.0, self.limit),
            service_s * self.recent_sheds,
        )
        base = min(MAX_RETRY_S, max(MIN_RETRY_S, backlog))
        return base * (rng or random).uniform(0.5, 1.5)

    def release(self, service_s: float, sample: bool = True, waited_s: float = 0.0) -> bool:
        """An admitted call ended after ``service_s`` in its handler, having waited
        ``waited_s`` before it; ``sample=False`` when its latency says nothing of load
        (it failed before doing work). True when the limit moved."""
        inflight = self.inflight
        self.inflight -= 1
        if not sample:
            return False
        self.queue.served(service_s)
        before = self.algorithm.limit
        return self.algorithm.on_sample(waited_s + service_s, inflight) != before
