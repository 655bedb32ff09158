"""Filling an object from the parents, with failover that never cuts a viewer off.

Parents are tried in rendezvous order for the object's key, then the ordered
fallbacks.  A parent that refuses, errs (5xx), times out before its head, or stalls
mid-body is left for the next one.

A live segment may be *held* at every tier until its first chunk exists (the origin
holds the next segment up to 2·D, then answers 503).  Such a request waits for its head
longer than others, nested per tier: a node asked by a viewer waits ``hold_s + 2 *
hold_margin_s`` and tells its parent so (``Livemesh-Hold: seconds``); the parent waits one
margin less for its own parent, never less than ``hold_s + hold_margin_s / 2``, so the
tier nearer the origin always gives up first.  A hold that ran out (the origin's "not
produced in time", or a node's 503 marked ``Livemesh-Hold: expired``) is the encoder
being late, not the parent failing: every other parent would hold just as long, so it
is passed on as such (503, marked) instead of failing over.

When bytes have already been passed on, the next parent is asked for the rest
(``Range: bytes=N-``); if it answers 200 instead of 206, the first N bytes are skipped
(URLs are immutable: the bytes are the same).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from edge import rendezvous
from edge.fill import KEPT_HEADERS, Fill
from edge.policy import CachePolicy

log = logging.getLogger(__name__)

Decide = Callable[[str, int, "str | None", float], CachePolicy]


class ParentFailed(Exception):
    """This parent cannot (or can no longer) serve the object."""


class HoldExpired(Exception):
    """The parent held the request as long as it holds one and the object still is not
    there: the encoder is late, and every other parent would say the same."""


HOLD_HEADER = "Livemesh-Hold"
HOLD_EXPIRED = "expired"
# the reason the origin gives when its hold for the next segment ran out (live/origin.py)
ORIGIN_HOLD_EXPIRED = b"segment not produced in time"


def holdable(path: str) -> bool:
    """Whether a parent may hold a request for ``path`` (a live segment) until it exists."""
    return path.startswith("/live/") and path.endswith(".m4s")


@dataclass
class UpstreamStats:
    fetches: int = 0  # attempts sent to a parent
    errors: int = 0
    failovers: int = 0  # attempts after a failed one for the same object
    holds_expired: int = 0  # held requests the parent ended with "not produced in time"
    resumed: int = 0  # attempts that continued a body already started
    bytes_in: int = 0
    per_parent: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamConfig:
    parents: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    connect_timeout_s: float = 1.0
    head_timeout_s: float = 5.0  # for a request no parent holds
    stall_timeout_s: float = 3.0  # silence mid-body that counts as a dead parent
    hold_s: float = 4.0  # longest the origin holds the next segment (2·D)
    hold_margin_s: float = 1.0  # what each tier adds to the wait for a held request

    @property
    def hold_wait_s(self) -> float:
        """How long a node asked by a viewer waits for a held request's head."""
        return self.hold_s + 2 * self.hold_margin_s

    def nested_wait_s(self, asker_wait_s: float | None) -> float:
        """How long to wait for a held head when the asker waits ``asker_wait_s`` (a child
        node's ``Livemesh-Hold``): a margin less, within [hold + margin / 2, own wait]."""
        own = self.hold_wait_s
        if asker_wait_s is None:
            return own
        floor = self.hold_s + self.hold_margin_s / 2
        return max(floor, min(own, asker_wait_s - self.hold_margin_s))


class Upstream:
    def __init__(self, config: UpstreamConfig, decide: Decide, now: Callable[[], float]):
        self.config = config
        self.parents = [p.rstrip("/") for p in config.parents]
        self.fallbacks = [p.rstrip("/") for p in config.fallbacks]
        self.decide = decide
        self.now = now
        self.stats = UpstreamStats()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def candidates(self, key: str) -> list[str]:
        """Where to ask for ``key``, in order."""
        seen = rendezvous.order(self.parents, key)
        return seen + [p for p in self.fallbacks if p not in seen]

    async def run(self, fill: Fill, path: str, wait_s: float | None = None) -> None:
        """Fill ``fill`` from the first parent that can; fail it when none can.

        ``wait_s``: how long to wait for a held request's head (default: a viewer's)."""
        last = "no parent configured"
        if wait_s is None:
            wait_s = self.config.hold_wait_s
        for attempt, parent in enumerate(self.candidates(path)):
            if attempt:
                self.stats.failovers += 1
            try:
                await self._attempt(parent, fill, path, wait_s)
                return
            except HoldExpired:
                self.stats.holds_expired += 1
                log.info("held request for %s ran out at %s: the encoder is late", path, parent)
                fill.fail("not produced in time", held=True)
                return
            except ParentFailed as exc:
                last = f"{parent}: {exc}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"{parent}: {type(exc).__name__} {exc}"
            self.stats.errors += 1
            log.warning("parent failed for %s: %s", path, last)
        fill.fail(last)

    async def _attempt(self, parent: str, fill: Fill, path: str, wait_s: float) -> None:
        assert self._session is not None, "Upstream.start() first"
        offset = fill.size
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            self.stats.resumed += 1
        cfg = self.config
        head_timeout = cfg.head_timeout_s
        if holdable(path) and not fill.head:
            head_timeout = wait_s
            headers[HOLD_HEADER] = f"{wait_s:.3f}"
        self.stats.fetches += 1
        self.stats.per_parent[parent] = self.stats.per_parent.get(parent, 0) + 1
        async with asyncio.timeout(head_timeout):
            resp = await self._session.get(parent + path, headers=headers, allow_redirects=False)
        async with resp:
            if resp.status == 503 and HOLD_HEADER in headers and await self._hold_expired(resp):
                raise HoldExpired()
            skip = self._check_head(resp, fill, offset, path)
            content = resp.content
            while True:
                async with asyncio.timeout(cfg.stall_timeout_s):
                    data = await content.readany()
                if not data:
                    break
                self.stats.bytes_in += len(data)
                if skip:
                    if len(data) <= skip:
                        skip -= len(data)
                        continue
                    data, skip = data[skip:], 0
                fill.feed(data)
        if skip or (fill.length is not None and fill.size < fill.length):
            raise ParentFailed("body ended early")
        fill.finish()

    async def _hold_expired(self, resp: aiohttp.ClientResponse) -> bool:
        """Whether a 503 to a held request says the hold ran out (a node marks it; the origin
        gives its reason)."""
        if resp.headers.get(HOLD_HEADER) == HOLD_EXPIRED:
            return True
        async with asyncio.timeout(self.config.stall_timeout_s):
            reason = await resp.content.read(256)
        return reason.startswith(ORIGIN_HOLD_EXPIRED)

    def _check_head(self, resp: aiohttp.ClientResponse, fill: Fill, offset: int, path: str) -> int:
        """Accept the response head; the number of body bytes to skip."""
        status = resp.status
        if status >= 500:
            raise ParentFailed(f"status {status}")
        if not fill.head:
            kept = [(name, resp.headers[name]) for name in KEPT_HEADERS if name in resp.headers]
            length = None
            if "Content-Length" in resp.headers and "Content-Encoding" not in resp.headers:
                length = int(resp.headers["Content-Length"])
            try:
                age = float(resp.headers.get("Age", "0"))
            except ValueError:
                age = 0.0
            policy = self.decide(path, status, resp.headers.get("Cache-Control"), age)
            fill.set_head(status, kept, length, policy, self.now())
            return 0
        if status == 206:
            content_range = resp.headers.get("Content-Range", "")
            unit, _, rest = content_range.partition(" ")
            start = rest.partition("-")[0]
            if unit != "bytes" or not start.isdigit() or int(start) != offset:
                raise ParentFailed(f"unexpected Content-Range {content_range!r}")
            return 0
        if status == 200 and fill.status == 200:
            return offset
        raise ParentFailed(f"status {status} while resuming at {offset}")
