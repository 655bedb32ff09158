"""The recommendation model, kept in Redis and updated as views are recorded.

Item-to-item co-occurrence: when a profile watches a title for the first time,
every title already in its history gets +1 with the new one, both ways
(a sorted set of co-watched titles per title), and the title gets +1 in popularity
(the fallback; key names in :mod:`kernel.keys`). Recommending for a profile sums the
co-occurrence rows of its recent titles, normalised by each row's popularity
so that blockbusters do not drown everything (a cosine-like weighting), and drops
what the profile has seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from kernel import keys

HISTORY_USED = 20  # most recent titles of a profile that drive its recommendations
ROW_READ = 50  # strongest co-watched titles read per history title


async def record_first_view(redis: aioredis.Redis, title: str, history: list[str]) -> None:
    """Count ``title``'s first view by a profile whose history held the other titles.

    The rows of the model are keys of their own (one per title), so no one transaction
    can hold them on a Redis Cluster: they go in a non-transactional pipeline (which the
    cluster client splits per node), after the profile's own MULTI recorded the view.
    The model is statistics, eventually consistent and counted at most once per
    profile and title: the caller calls this only when its MULTI added the title to
    the history, so a retried or concurrent view of the same title never counts twice
    (which would bias the model towards whatever clients retry), while a crash or a
    failing node between the two writes loses that view's increments, or part of them,
    for good (a lost count among thousands moves no ranking).
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zincrby(keys.POPULAR_TITLES, 1, title)
        for other in history:
            if other != title:
                pipe.zincrby(keys.co_watched(title), 1, other)
                pipe.zincrby(keys.co_watched(other), 1, title)
        await pipe.execute()


@dataclass(frozen=True)
class Scored:
    title: str
    score: float
    because_of: str = ""


async def popular(redis: aioredis.Redis, count: int, exclude: set[str]) -> list[Scored]:
    rows = cast(
        list[tuple[str, float]],
        await redis.zrevrange(keys.POPULAR_TITLES, 0, count + len(exclude) - 1, withscores=True),
    )
    return [Scored(str(t), float(s)) for t, s in rows if t not in exclude][:count]


async def co_watched(redis: aioredis.Redis, history: list[str], count: int) -> list[Scored]:
    """Titles watched with the history's titles, best first, none of the history."""
    recent = history[:HISTORY_USED]
    if not recent:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for title in recent:
            pipe.zrevrange(keys.co_watched(title), 0, ROW_READ - 1, withscores=True)
        pipe.zmscore(keys.POPULAR_TITLES, recent)
        *rows, pops = await pipe.execute()
    seen = set(history)
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for title, row, pop in zip(recent, rows, pops, strict=True):
        norm = 1.0 / math.sqrt(float(pop or 1.0))
        for candidate, count_together in row:
            candidate = str(candidate)
            if candidate in seen:
                continue
            contribution = float(count_together) * norm
            scores[candidate] = scores.get(candidate, 0.0) + contribution
            if contribution > best.get(candidate, (0.0, ""))[0]:
                best[candidate] = (contribution, title)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
    return [Scored(t, s, best[t][1]) for t, s in ranked]
