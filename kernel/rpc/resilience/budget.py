"""Retry budget: retries may be at most ``ratio`` of calls over a sliding window (pure).

Time is cut into ``buckets`` slots of ``window_s / buckets``; a slot older than the
window is forgotten. ``min_retries`` lets a client with very little traffic retry at
all (Finagle's reserve); keep it small, it is the only slack over ``ratio``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.1,
        window_s: float = 10.0,
        buckets: int = 10,
        min_retries: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.clock = clock
        self._slot_s = window_s / buckets
        self._calls = [0] * buckets
        self._retries = [0] * buckets
        self._slot_ids = [-1] * buckets

    def _slot(self) -> int:
        slot_id = int(self.clock() / self._slot_s)
        index = slot_id % len(self._calls)
        if self._slot_ids[index] != slot_id:
            self._slot_ids[index] = slot_id
            self._calls[index] = 0
            self._retries[index] = 0
        return index

    def _totals(self) -> tuple[int, int]:
        now_id = int(self.clock() / self._slot_s)
        oldest = now_id - len(self._calls) + 1
        calls = retries = 0
        for index, slot_id in enumerate(self._slot_ids):
            if slot_id >= oldest:
                calls += self._calls[index]
                retries += self._retries[index]
        return calls, retries

    def record_call(self) -> None:
        """One logical call (not an attempt) was made."""
        self._calls[self._slot()] += 1

    def try_spend(self) -> bool:
        """Take one retry (or hedge) from the budget; False when it is spent."""
        calls, retries = self._totals()
        if retries + 1 > self.ratio * calls + self.min_retries:
            return False
        self._retries[self._slot()] += 1
        return True

    def amplification(self) -> float:
        """(calls + retries) / calls over the window."""
        calls, retries = self._totals()
        return (calls + retries) / calls if calls else 1.0
