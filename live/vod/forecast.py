"""Which titles viewers will ask for next: the popularity forecast behind pre-positioning.

Two signals the recommendation model already keeps in Redis (:mod:`kernel.keys`): a
title's first views (``POPULAR_TITLES``), and the titles watched with it (its
co-watched row).  A title's forecast is its own popularity plus the *pull* of the
popular titles whose viewers it is recommended to: each of the ``breadth`` most popular
titles hands its popularity on over its co-watched row, in proportion to the row's
counts (where the recommendations will send that title's next viewers).  So a title
rising with a hit is pushed before its own count shows it.

:func:`forecast` is pure; :func:`read_demand` reads its input from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from kernel import keys

BREADTH = 20  # popular titles whose co-watched rows are read
ROW_READ = 50  # strongest co-watched titles read per row
PULL_WEIGHT = 0.5  # share of a title's popularity its co-watched titles are expected to draw


@dataclass(frozen=True)
class Demand:
    """The model's counts: popularity per title, and co-watched rows of the popular ones."""

    popularity: dict[str, float]
    co_watched: dict[str, dict[str, float]]


def forecast(demand: Demand, count: int) -> list[tuple[str, float]]:
    """The ``count`` titles most likely to be asked for next, with their scores, best first."""
    scores = dict(demand.popularity)
    for title, row in demand.co_watched.items():
        total = sum(row.values())
        if total <= 0:
            continue
        share = PULL_WEIGHT * demand.popularity.get(title, 0.0) / total
        for other, together in row.items():
            scores[other] = scores.get(other, 0.0) + share * together
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(title, score) for title, score in ranked if score > 0][:count]


async def read_demand(redis: aioredis.Redis, breadth: int = BREADTH) -> Demand:
    """The popularity of the ``breadth`` most viewed titles, and their co-watched rows."""
    top = cast(
        list[tuple[bytes | str, float]],
        await redis.zrevrange(keys.POPULAR_TITLES, 0, breadth - 1, withscores=True),
    )
    popularity = {_text(t): float(s) for t, s in top}
    async with redis.pipeline(transaction=False) as pipe:
        for title in popularity:
            pipe.zrevrange(keys.co_watched(title), 0, ROW_READ - 1, withscores=True)
        rows = await pipe.execute()
    co = {t: {_text(o): float(s) for o, s in row} for t, row in zip(popularity, rows, strict=True)}
    return Demand(popularity, co)


def _text(member: bytes | str) -> str:
    """A sorted-set member as text, whether or not the client decodes responses."""
    return member.decode() if isinstance(member, bytes) else member
