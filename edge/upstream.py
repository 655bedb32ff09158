"""Filling an object from the parents, with failover that never cuts a viewer off.

Parents are tried in rendezvous order for the object's key, then the ordered
fallbacks.  A parent that refuses, errs (5xx), times out before its head, or stalls
mid-body is left for the next one.  When bytes have already been passed on, the next
parent is asked for the rest (``Range: bytes=N-``); if it answers 200 instead of
206, the first N bytes are skipped (URLs are immutable: the bytes are the same).
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


@dataclass
class UpstreamStats:
    fetches: int = 0  # attempts sent to a parent
    errors: int = 0
    failovers: int = 0  # attempts after a failed one for the same object
    resumed: int = 0  # attempts that continued a body already started
    bytes_in: int = 0
    per_parent: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamConfig:
    parents: tuple[str, ...]
    fallbacks: tuple[str, ...] = ()
    connect_timeout_s: float = 1.0
    head_timeout_s: float = 5.0  # longer than a held next-segment request (one D)
    stall_timeout_s: float = 3.0  # silence mid-body that counts as a dead parent


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

    async def run(self, fill: Fill, path: str) -> None:
        """Fill ``fill`` from the first parent that can; fail it when none can."""
        last = "no parent configured"
        for attempt, parent in enumerate(self.candidates(path)):
            if attempt:
                self.stats.failovers += 1
            try:
                await self._attempt(parent, fill, path)
                return
            except ParentFailed as exc:
                last = f"{parent}: {exc}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"{parent}: {type(exc).__name__} {exc}"
            self.stats.errors += 1
            log.warning("parent failed for %s: %s", path, last)
        fill.fail(last)

    async def _attempt(self, parent: str, fill: Fill, path: str) -> None:
        assert self._session is not None, "Upstream.start() first"
        offset = fill.size
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            self.stats.resumed += 1
        self.stats.fetches += 1
        self.stats.per_parent[parent] = self.stats.per_parent.get(parent, 0) + 1
        cfg = self.config
        async with asyncio.timeout(cfg.head_timeout_s):
            resp = await self._session.get(parent + path, headers=headers, allow_redirects=False)
        async with resp:
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
