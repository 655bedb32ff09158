"""Observed latency per method: the p95 that decides when to hedge (pure)."""

from __future__ import annotations

import bisect

from kernel.stats import rank_of


class LatencyTracker:
    """The last ``size`` latencies of one method; quantiles once ``min_samples`` are in.

    The samples are also kept sorted as they come and go (a binary search and a short
    memmove per sample), so a quantile is read at once: the hedging path asks for the
    p95 on every call, and sorting the window each time cost more than the call's
    other bookkeeping together."""

    def __init__(self, size: int = 256, min_samples: int = 20) -> None:
        self.size = size
        self.min_samples = min_samples
        self._samples: list[float] = []  # a ring, oldest at ``_next`` once full
        self._next = 0
        self._sorted: list[float] = []

    def add(self, seconds: float) -> None:
        if len(self._samples) < self.size:
            self._samples.append(seconds)
        else:
            gone = self._samples[self._next]
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self.size
            del self._sorted[bisect.bisect_left(self._sorted, gone)]
        bisect.insort(self._sorted, seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile, or None while there are too few samples."""
        n = len(self._sorted)
        if n < self.min_samples:
            return None
        return self._sorted[rank_of(n, q)]

    def p95(self) -> float | None:
        return self.quantile(0.95)
