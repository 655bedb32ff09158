"""Token buckets: ``rate`` per second sustained, ``burst`` at once.

Pure logic with time passed in (or read from an injected clock), so limits are
tested without sockets or sleeps.  The gateway limits requests per client with
:class:`TokenBuckets`; ingest limits session attempts per client with it and per
process with one :class:`TokenBucket`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """One bucket; ``take`` spends a token if there is one."""

    __slots__ = ("burst", "rate_per_s", "tokens", "updated_s")

    def __init__(self, rate_per_s: float, burst: float, now_s: float) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self.tokens, self.updated_s = burst, now_s  # starts full

    def take(self, now_s: float) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        elapsed_s = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return self.wait_s()

    def wait_s(self) -> float:
        """Seconds from the last take until the next token."""
        return max(0.0, (1 - self.tokens) / self.rate_per_s)


class TokenBuckets:
    """A bucket per key (a client); past ``max_keys`` the least recently seen is forgotten."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now_s: float | None = None) -> float:
        """0 when ``key`` may pass, else the seconds until it could (``now_s``: the clock's)."""
        now = self.clock() if now_s is None else now_s
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def wait_s(self, key: str) -> float:
        """Seconds from ``key``'s last take until its next token (0 for an unknown key)."""
        bucket = self._buckets.get(key)
        return bucket.wait_s() if bucket is not None else 0.0
