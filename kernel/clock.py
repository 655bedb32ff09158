"""The one place livemesh reads the wall clock, so tests can reason about time."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock UTC time in whole milliseconds."""
    return time.time_ns() // 1_000_000


def now_s() -> float:
    """Wall-clock UTC time in seconds."""
    return time.time()
