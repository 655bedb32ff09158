"""Bulkhead: bounded concurrency per dependency with a bounded wait for a slot.

A slow dependency fills its own pool and its callers are turned away after at
most ``max_wait_s``; calls to other dependencies never wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class BulkheadFull(Exception):
    """No slot within the allowed wait."""


class Bulkhead:
    def __init__(self, max_concurrent: int = 64, max_wait_s: float = 0.05) -> None:
        self.max_concurrent = max_concurrent
        self.max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.in_use = 0

    async def acquire(self, wait_s: float | None = None, max_wait_s: float | None = None) -> None:
        """Take one slot; ``wait_s`` (at most ``max_wait_s``, the bulkhead's own unless the
        caller's policy gives another) bounds the wait. Waiters are served in arrival order.
        Pair with :meth:`release` (the per-call path uses these rather than :meth:`slot`,
        whose generator-based context manager costs more than the slot itself)."""
        slots = self._slots
        if slots.locked():
            cap = self.max_wait_s if max_wait_s is None else max_wait_s
            wait = cap if wait_s is None else max(0.0, min(wait_s, cap))
            if wait <= 0:
                raise BulkheadFull(f"all {self.max_concurrent} slots busy")
            try:
                await asyncio.wait_for(slots.acquire(), wait)
            except TimeoutError:
                raise BulkheadFull(
                    f"all {self.max_concurrent} slots busy for {wait * 1000:.0f} ms"
                ) from None
        else:
            await slots.acquire()
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._slots.release()

    @contextlib.asynccontextmanager
    async def slot(self, wait_s: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body; ``wait_s`` (at most ``max_wait_s``) bounds the wait."""
        await self.acquire(wait_s)
        try:
            yield
        finally:
            self.release()
