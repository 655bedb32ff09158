"""One upstream fetch shared by every request for the object (read-while-writer).

A :class:`Fill` is created on the first miss and stored at once, so every later
request for the same key *joins* it instead of asking upstream again, whether the
response head has arrived or not (a held next-segment request collapses too).
Joiners get what is buffered at once, then each piece as it arrives: the fill
pushes to its subscribers synchronously, so a piece reaches every waiter in the
same event-loop turn it arrived in.  Bodies are kept as the list of received
``bytes`` objects and never copied or joined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from edge.policy import NO_STORE, CachePolicy

# response headers worth keeping from upstream (lower-case)
KEPT_HEADERS = ("content-type", "cache-control", "etag", "last-modified")


class Subscriber(Protocol):
    """What a fill needs from a waiting response."""

    def on_head(self, fill: Fill) -> None: ...

    def on_data(self, fill: Fill, piece: bytes) -> None: ...

    def on_end(self, fill: Fill) -> None: ...

    def on_error(self, fill: Fill) -> None: ...


class Fill:
    """The state of one object: head, body pieces so far, done or failed; and its waiters."""

    __slots__ = (
        "_on_grow",
        "born",
        "done",
        "error",
        "expires",
        "head",
        "headers",
        "held",
        "hit_age",
        "hit_date",
        "hit_head",
        "key",
        "length",
        "pieces",
        "policy",
        "retry_after",
        "size",
        "stale_until",
        "status",
        "subscribers",
        "wire_head",
    )

    def __init__(self, key: str, born: float) -> None:
        self.key = key
        self.born = born  # monotonic time of the head (creation until then)
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None  # announced Content-Length, when upstream gave one
        self.policy: CachePolicy = NO_STORE
        self.expires = 0.0
        self.stale_until = 0.0
        self.head = False
        self.wire_head = b""  # the node's pre-rendered response head for this object
        # the whole head of a keep-alive hit, valid while the Date line and the Age stay
        self.hit_head = b""
        self.hit_date = b""
        self.hit_age = -1
        self.pieces: list[bytes] = []
        self.size = 0
        self.done = False
        self.error: str | None = None
        self.held = False  # failed because the parents' hold ran out (the encoder is late)
        # failed with the last parent unavailable for a while (503 + Retry-After: the
        # origin without its state store): its Retry-After, in seconds
        self.retry_after: int | None = None
        self.subscribers: list[Subscriber] = []
        self._on_grow: Callable[[Fill, int], None] | None = None

    # -- writer side ---------------------------------------------------------------

    def set_head(
        self,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
        policy: CachePolicy,
        now: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self.length = length
        self.policy = policy
        self.born = now
        self.expires = now + policy.lifetime_s
        self.stale_until = self.expires + policy.swr_s if not math.isinf(self.expires) else math.inf
        self.head = True
        for sub in list(self.subscribers):
            sub.on_head(self)

    def feed(self, piece: bytes) -> None:
        if not piece:
            return
        self.pieces.append(piece)
        self.size += len(piece)
        if self._on_grow is not None:
            self._on_grow(self, len(piece))
        for sub in list(self.subscribers):
            sub.on_data(self, piece)

    def finish(self) -> None:
        self.done = True
        self.length = self.size
        subs, self.subscribers = self.subscribers, []
        for sub in subs:
            sub.on_end(self)

    def fail(self, reason: str, held: bool = False, retry_after: int | None = None) -> None:
        self.error = reason
        self.held = held
        self.retry_after = retry_after
        self.done = True
        subs, self.subscribers = self.subscribers, []
        for sub in subs:
            sub.on_error(self)

    # -- reader side ---------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.done and self.error is None

    @property
    def validator(self) -> str | None:
        """The object's strong ETag, None when upstream gave none or a weak one.

        It names one copy of the object's bytes: a live segment replaced by the other
        redundant pipeline's copy comes back under another, so a body already begun is
        continued only from a copy with the same one (:mod:`edge.upstream`).
        """
        for name, value in self.headers:
            if name == "etag":
                return None if value.startswith("W/") else value
        return None

    def fresh(self, now: float) -> bool:
        return now < self.expires

    def usable_stale(self, now: float) -> bool:
        return now < self.stale_until

    def subscribe(self, sub: Subscriber) -> None:
        """Join: the caller has already sent the head and ``pieces``; later events follow."""
        self.subscribers.append(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def track_growth(self, callback: Callable[[Fill, int], None] | None) -> None:
        self._on_grow = callback
