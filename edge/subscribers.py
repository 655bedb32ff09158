"""The node's own subscribers on a fill (viewers' are :class:`edge.responses.Responder`)."""

from __future__ import annotations

import asyncio

from edge.fill import Fill
from edge.store import Store


class Keeper:
    """Files each fill in the store when its head allows, forgets it when done."""

    def __init__(self, store: Store, inflight: dict[str, Fill]) -> None:
        self.store = store
        self.inflight = inflight

    def on_head(self, fill: Fill) -> None:
        if fill.policy.store:
            self.store.put(fill)
        elif self.inflight.get(fill.key) is fill:
            del self.inflight[fill.key]  # never cached: later requests fetch for themselves

    def on_data(self, fill: Fill, piece: bytes) -> None:
        pass

    def on_end(self, fill: Fill) -> None:
        if self.inflight.get(fill.key) is fill:
            del self.inflight[fill.key]
        if len(fill.pieces) > 1:  # one piece per stored object: one iovec per hit
            fill.pieces = [b"".join(fill.pieces)]

    def on_error(self, fill: Fill) -> None:
        self.on_end(fill)
        if self.store.peek(fill.key) is fill:
            self.store.remove(fill.key)


class Waiter:
    """A subscriber that only wants to know when the fill is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()

    def on_head(self, fill: Fill) -> None:
        pass

    def on_data(self, fill: Fill, piece: bytes) -> None:
        pass

    def on_end(self, fill: Fill) -> None:
        if not self.done.done():
            self.done.set_result(None)

    on_error = on_end
