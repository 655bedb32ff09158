"""Filling an object from the parents, with failover that never cuts a viewer off.

Parents are tried in rendezvous order for the object's key, then the ordered
fallbacks.  A parent that refuses, errs (5xx), times out before its head, or stalls
mid-body is left for the next one.  When none could serve it and the last one said it
is unavailable for a while (503 with ``Retry-After``: an origin whose state store is
restarting), the node says the same to its viewers, not 502: a player retries then.

A live segment may be *held* at every tier until its first chunk exists (the origin
holds the next segment up to 2·D, then answers 503).  Such a request waits for its head
longer than others, nested per tier: a node asked by a viewer waits ``hold_s + 2 *
hold_margin_s`` and tells its parent so (``Livemesh-Hold: seconds``); the parent waits one
margin less for its own parent, never less than ``hold_s + hold_margin_s / 2``, so the
tier nearer the origin always gives up first.  A hold that ran out (a 503 marked
``Livemesh-Hold: expired``, by the origin or a node) is the encoder
being late, not the parent failing: every other parent would hold just as long, so it
is passed on as such (503, marked) instead of failing over (:mod:`kernel.http.hold`).

When bytes have already been passed on, the next parent is asked for the rest
(``Range: bytes=N-``, with ``If-Range`` and the object's ETag); if it answers 200 instead
of 206, the first N bytes are skipped.  That is safe only for the same bytes: a live
segment whose redundant pipeline died mid-segment may have been *replaced* at the origin
by the other pipeline's copy, a different encode under the same URL, with another ETag
(:func:`live.origin_live_segment.copy_tag`).  Then no parent can continue what was passed
on, and splicing the new copy's tail onto the old copy's head would hand viewers a body
that does not decode.  So a resumed answer must carry the fill's ETag; one that does not
(or has none) fails the fill at once, without trying further parents: every viewer
streaming it is cut (a truncated body, never a short or spliced one, see
:class:`edge.responses.Responder`), and the retry each player makes at segment
granularity starts a new fill, which gets the copy now served whole.  Resuming, not
refetching, stays the rule when a parent dies with the copy unchanged (a shield killed
mid-segment): viewers then see nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from edge import rendezvous
from edge.defaults import DEFAULTS
from edge.fill import KEPT_HEADERS, Fill
from edge.policy import CachePolicy
from kernel.http.hold import HOLD_EXPIRED, HOLD_HEADER

log = logging.getLogger(__name__)

Decide = Callable[[str, int, "str | None", float], CachePolicy]


class ParentFailed(Exception):
    """This parent cannot (or can no longer) serve the object; ``retry_after``: it said
    (503 with ``Retry-After``) that it is unavailable for that many seconds."""

    def __init__(self, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after_of(resp: aiohttp.ClientResponse) -> int | None:
    """A 503's ``Retry-After`` in whole seconds (the delay form; a date is not ours)."""
    value = resp.headers.get("Retry-After", "")
    return int(value) if resp.status == 503 and value.isdigit() else None


class CopyReplaced(Exception):
    """The parent now serves another copy of the object than the bytes already passed on
    (a live segment replaced by the other redundant pipeline's): no parent can continue
    them."""


class HoldExpired(Exception):
    """The parent held the request as long as it holds one and the object still is not
    there: the encoder is late, and every other parent would say the same."""


def holdable(path: str) -> bool:
    """Whether a parent may hold a request for ``path`` until it exists: a live segment, or
    an LL-HLS blocking playlist reload (its key carries ``_HLS_msn``)."""
    return path.startswith("/live/") and (path.endswith(".m4s") or "?_HLS_msn=" in path)


@dataclass
class UpstreamStats:
    fetches: int = 0  # attempts sent to a parent
    errors: int = 0
    failovers: int = 0  # attempts after a failed one for the same object
    holds_expired: int = 0  # held requests the parent ended with "not produced in time"
    resumed: int = 0  # attempts that continued a body already started
    replaced: int = 0  # fills cut because upstream's copy changed under them
    bytes_in: int = 0
    per_parent: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamConfig:
    parents: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    connect_timeout_s: float = 1.0
    head_timeout_s: float = DEFAULTS.head_timeout  # for a request no parent holds
    stall_timeout_s: float = DEFAULTS.stall_timeout  # mid-body silence: a dead parent
    hold_s: float = DEFAULTS.hold  # longest the origin holds the next segment (2·D)
    hold_margin_s: float = DEFAULTS.hold_margin  # each tier's addition to a held wait

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
        retry_after: int | None = None  # the last parent's, when it said it is unavailable
        if wait_s is None:
            wait_s = self.config.hold_wait_s
        for attempt, parent in enumerate(self.candidates(path)):
            if attempt:
                self.stats.failovers += 1
            try:
                await self._attempt(parent, fill, path, wait_s)
                return
            except CopyReplaced as exc:
                self.stats.replaced += 1
                log.info("%s was replaced upstream (%s): its viewers refetch it", path, exc)
                fill.fail(f"replaced upstream: {exc}")
                return
            except HoldExpired:
                self.stats.holds_expired += 1
                log.info("held request for %s ran out at %s: the encoder is late", path, parent)
                fill.fail("not produced in time", held=True)
                return
            except ParentFailed as exc:
                last, retry_after = f"{parent}: {exc}", exc.retry_after
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last, retry_after = f"{parent}: {type(exc).__name__} {exc}", None
            self.stats.errors += 1
            log.warning("parent failed for %s: %s", path, last)
        fill.fail(last, retry_after=retry_after)

    async def _attempt(self, parent: str, fill: Fill, path: str, wait_s: float) -> None:
        assert self._session is not None, "Upstream.start() first"
        offset = fill.size
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if fill.validator is not None:
                headers["If-Range"] = fill.validator
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
            if (
                resp.status == 503
                and HOLD_HEADER in headers
                and resp.headers.get(HOLD_HEADER) == HOLD_EXPIRED
            ):
                raise HoldExpired()
            skip = self._check_head(resp, fill, offset, path)
            content = resp.content
            while True:
                async with asyncio.timeout(cfg.stall_timeout_s):
                    piece = await content.readany()
                if not piece:
                    break
                self.stats.bytes_in += len(piece)
                if skip:
                    if len(piece) <= skip:
                        skip -= len(piece)
                        continue
                    piece, skip = piece[skip:], 0
                fill.feed(piece)
        if skip or (fill.length is not None and fill.size < fill.length):
            raise ParentFailed("body ended early")
        fill.finish()

    def _check_head(self, resp: aiohttp.ClientResponse, fill: Fill, offset: int, path: str) -> int:
        """Accept the response head; the number of body bytes to skip."""
        status = resp.status
        if status >= 500:
            raise ParentFailed(f"status {status}", retry_after_of(resp))
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
        tag = resp.headers.get("ETag")
        if status in (200, 206) and fill.validator is not None and tag != fill.validator:
            raise CopyReplaced(f"ETag {tag}, {fill.validator} begun")
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
