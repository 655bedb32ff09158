"""A read-through cache in front of a slower store (the EVCache role of the seed architecture).

Entries live ``ttl_s`` seconds at most and the cache holds ``max_entries`` (least
recently used out first). Writers call :meth:`invalidate` after they change the store, so
a reader of the same process never sees its own write undone; other processes see it
within ``ttl_s``. Concurrent misses for one key share one load.

With ``stale_if``, a load that fails with an error it accepts (the store is down) answers
the last value loaded for the key, however old, if there is one: what was readable before
an outage stays readable through it (a viewer already authorised still presses play).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ReadThroughCache(Generic[V]):
    def __init__(
        self,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        stale_if: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.stale_if = stale_if
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0
        self.stale = 0

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            if entry is not None and self._serves_stale(exc):
                self.stale += 1
                future.set_result(entry[1])
                return entry[1]
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        self._entries[key] = (self.clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def _serves_stale(self, exc: BaseException) -> bool:
        return self.stale_if is not None and isinstance(exc, Exception) and self.stale_if(exc)

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)
