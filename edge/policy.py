"""What a cache may do with an upstream response, from its ``Cache-Control`` (DESIGN.md §5).

Pure functions: no clock, no I/O.  The node turns a :class:`CachePolicy` into an
expiry instant on its own monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CACHEABLE_STATUSES = frozenset({200})
NEGATIVE_STATUSES = frozenset({404, 410})


@dataclass(frozen=True)
class CachePolicy:
    """``store``: keep it at all; fresh for ``ttl_s``; may be served stale ``swr_s`` more."""

    store: bool
    ttl_s: float = 0.0
    swr_s: float = 0.0
    immutable: bool = False

    @property
    def lifetime_s(self) -> float:
        return math.inf if self.immutable else self.ttl_s


NO_STORE = CachePolicy(store=False)


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """``"public, max-age=60"`` → ``{"public": None, "max-age": "60"}`` (names lower-cased)."""
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in value.split(","):
        name, sep, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name:
            out[name] = arg.strip().strip('"') if sep else None
    return out


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return float(number) if number >= 0 else None


def decide(
    status: int,
    cache_control: str | None,
    age_s: float = 0.0,
    *,
    negative_ttl_max_s: float = 0.2,
    default_swr_s: float = 0.0,
) -> CachePolicy:
    """The policy for one response.

    - ``no-store``, ``private`` and ``no-cache`` are never stored; neither is a response
      without an explicit lifetime (we never guess one).
    - ``s-maxage`` wins over ``max-age``; the upstream's ``Age`` is taken off the lifetime.
    - ``immutable`` 200s live until evicted.
    - 404/410 are stored for at most ``negative_ttl_max_s`` (a chunk duration), so a
      "not yet" at the live edge never outlives the chunk that makes it wrong.
    - ``stale-while-revalidate`` from upstream, else ``default_swr_s``, unless
      ``must-revalidate``/``proxy-revalidate`` forbid serving stale.
    """
    if status not in CACHEABLE_STATUSES and status not in NEGATIVE_STATUSES:
        return NO_STORE
    cc = parse_cache_control(cache_control)
    if "no-store" in cc or "private" in cc or "no-cache" in cc:
        return NO_STORE
    lifetime = _seconds(cc.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(cc.get("max-age"))
    if lifetime is None:
        return NO_STORE
    if status in NEGATIVE_STATUSES:
        ttl = min(lifetime - age_s, negative_ttl_max_s)
        return CachePolicy(store=ttl > 0, ttl_s=max(ttl, 0.0))
    immutable = "immutable" in cc
    ttl = max(lifetime - age_s, 0.0)
    swr = _seconds(cc.get("stale-while-revalidate"))
    if "must-revalidate" in cc or "proxy-revalidate" in cc:
        swr = 0.0
    elif swr is None:
        swr = default_swr_s
    if ttl <= 0 and not immutable and swr <= 0:
        return NO_STORE
    return CachePolicy(store=True, ttl_s=ttl, swr_s=swr, immutable=immutable)
