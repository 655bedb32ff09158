"""Observed latency per method: the p95 that decides when to hedge (pure)."""

from __future__ import annotations

import math


class LatencyTracker:
    """The last ``size`` latencies of one method; quantiles once ``min_samples`` are in."""

    def __init__(self, size: int = 256, min_samples: int = 20) -> None:
        self.size = size
        self.min_samples = min_samples
        self._samples: list[float] = []
        self._next = 0
        self._sorted: list[float] | None = None

    def add(self, seconds: float) -> None:
        if len(self._samples) < self.size:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self.size
        self._sorted = None

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile, or None while there are too few samples."""
        if len(self._samples) < self.min_samples:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._samples)
        rank = max(1, math.ceil(q * len(self._sorted)))
        return self._sorted[rank - 1]

    def p95(self) -> float | None:
        return self.quantile(0.95)
