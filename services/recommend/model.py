"""The recommendation model, kept in Redis and updated as views are recorded.

Item-to-item co-occurrence: when a profile watches a title for the first time,
every title already in its history gets +1 with the new one, both ways
(``lm:rec:co:{title}`` sorted set of co-watched titles), and the title gets +1 in
``lm:rec:pop`` (popularity, the fallback). Recommending for a profile sums the
co-occurrence rows of its recent titles, normalised by each row's popularity
so that blockbusters do not drown everything (a cosine-like weighting), and drops
what the profile has seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

POPULAR = "lm:rec:pop"
HISTORY_USED = 20  # most recent titles of a profile that drive its recommendations
ROW_READ = 50  # strongest co-watched titles read per history title


def co_key(title: str) -> str:
    return f"lm:rec:co:{title}"


def record_first_view(pipe: aioredis.client.Pipeline, title: str, history: list[str]) -> None:
    """Queue the model updates of ``title`` joining a history of other titles."""
    pipe.zincrby(POPULAR, 1, title)
    for other in history:
        if other != title:
            pipe.zincrby(co_key(title), 1, other)
            pipe.zincrby(co_key(other), 1, title)


@dataclass(frozen=True)
class Scored:
    title: str
    score: float
    because_of: str = ""


async def popular(redis: aioredis.Redis, count: int, exclude: set[str]) -> list[Scored]:
    rows = cast(
        list[tuple[str, float]],
        await redis.zrevrange(POPULAR, 0, count + len(exclude) - 1, withscores=True),
    )
    return [Scored(str(t), float(s)) for t, s in rows if t not in exclude][:count]


async def co_watched(redis: aioredis.Redis, history: list[str], count: int) -> list[Scored]:
    """Titles watched with the history's titles, best first, none of the history."""
    recent = history[:HISTORY_USED]
    if not recent:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for title in recent:
            pipe.zrevrange(co_key(title), 0, ROW_READ - 1, withscores=True)
        pipe.zmscore(POPULAR, recent)
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
