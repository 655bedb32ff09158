"""How late a process's event loop wakes: a load rig's check on itself.

A worker that plays thousands of viewers does their work in bursts (every viewer asks
for the next segment when it becomes available, at the same instant). While a burst
runs, every other viewer of that worker waits, and what it then records (a late
chunk, a stall, a long TTFB) is the rig's delay, not the system's. So every worker
measures how late its loop wakes from a short sleep, and the results say how far to
trust them.
"""

from __future__ import annotations

import asyncio
import time
from array import array

INTERVAL_S = 0.01


class LoopLag:
    """Samples, in ms, of how late the running loop wakes from an ``INTERVAL_S`` sleep,
    taken while the ``with`` block runs (the loop's run-queue wait: work queued ahead of
    the wake-up, and any time the process waited for a core)."""

    def __init__(self) -> None:
        self.samples: array[float] = array("d")
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(INTERVAL_S)
            self.samples.append((time.perf_counter() - start - INTERVAL_S) * 1000)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
