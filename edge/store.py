"""The cache store: objects by key, memory bounded by bytes.

Eviction is segmented LRU.  A new object enters *probation*; a second request
promotes it to *protected* (at most ``protected_share`` of the bytes).  Victims come
from the cold end of probation first, so a flood of distinct URLs asked once each
(a scan, an attack) only churns probation and never pushes out the live window,
whose objects every viewer asks for within seconds.  An object in the middle of its
fill counts with the bytes it has so far and grows in place.
"""

from __future__ import annotations

from collections import OrderedDict

from edge.fill import Fill


class Store:
    def __init__(
        self, max_bytes: int, protected_share: float = 0.8, max_object_share: float = 0.25
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.max_protected = int(max_bytes * protected_share)
        self.max_object = max(1, int(max_bytes * max_object_share))
        self.probation: OrderedDict[str, Fill] = OrderedDict()
        self.protected: OrderedDict[str, Fill] = OrderedDict()
        self.bytes = 0
        self.protected_bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.probation) + len(self.protected)

    def __contains__(self, key: str) -> bool:
        return key in self.protected or key in self.probation

    def peek(self, key: str) -> Fill | None:
        return self.protected.get(key) or self.probation.get(key)

    def get(self, key: str) -> Fill | None:
        """The object under ``key``, recording the access for eviction."""
        fill = self.protected.get(key)
        if fill is not None:
            self.protected.move_to_end(key)
            return fill
        fill = self.probation.pop(key, None)
        if fill is None:
            return None
        self.protected[key] = fill
        self.protected_bytes += fill.size
        while self.protected_bytes > self.max_protected and len(self.protected) > 1:
            old_key, old = self.protected.popitem(last=False)
            self.protected_bytes -= old.size
            self.probation[old_key] = old  # demoted to the hot end of probation
        return fill

    def put(self, fill: Fill) -> bool:
        """Store ``fill`` (replacing any object under its key); False when it is too big."""
        self.remove(fill.key)
        if fill.size > self.max_object:
            return False
        self.probation[fill.key] = fill
        self.bytes += fill.size
        fill.track_growth(self._grew)
        self._evict()
        return fill.key in self

    def remove(self, key: str) -> None:
        fill = self.protected.pop(key, None)
        if fill is not None:
            self.protected_bytes -= fill.size
        else:
            fill = self.probation.pop(key, None)
        if fill is not None:
            self.bytes -= fill.size
            fill.track_growth(None)

    def _grew(self, fill: Fill, added: int) -> None:
        self.bytes += added
        if fill.key in self.protected:
            self.protected_bytes += added
        if fill.size > self.max_object:
            self.remove(fill.key)  # keeps streaming to its waiters, just not kept
        elif self.bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and len(self):
            segment = self.probation if self.probation else self.protected
            _key, fill = segment.popitem(last=False)
            if segment is self.protected:
                self.protected_bytes -= fill.size
            self.bytes -= fill.size
            fill.track_growth(None)
            self.evictions += 1
