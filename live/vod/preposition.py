"""Pre-positioning: push the forecast's titles into edges' caches before viewers ask.

Off-peak, an operator (``livemesh vod preposition``) takes the :mod:`.forecast`'s top
titles that are published (a manifest in the object store), lists every object of each
(the MPD first: what a press of play asks for before anything else) and hands the
paths to each edge's admin API (``POST /admin/preposition`` behind the edge's admin
key), which fills them from its parents as a viewer's miss would.  Every edge given
gets the same titles: the view history is not kept per region, so nothing tells one
edge's audience from another's.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis

from kernel.objectstore import ObjectStore
from live.vod.forecast import forecast, read_demand
from live.vod.package import MANIFEST
from live.vod.publish import TitleError, manifest_name, title_prefix

BATCH = 1000  # paths per request: the edge's admin API takes at most this many at once
CANDIDATES = 4
PUSH_TIMEOUT_S = 600.0  # one batch: the edge answers once all its fills are done


@dataclass(frozen=True)
class Pushed:
    """What one edge did with the paths it was given: each path's fill status."""

    edge: str
    results: dict[str, int]

    @property
    def filled(self) -> int:
        return sum(1 for status in self.results.values() if status == 200)


def title_id(name: str) -> str:
    """The model counts views by resource name (``titles/{id}``); the store by id."""
    return name.removeprefix("titles/")


async def title_paths(store: ObjectStore, title: str) -> list[str]:
    """The URL paths of a published title's objects, its MPD first; none if unpublished."""
    try:
        if await store.size(manifest_name(title)) is None:
            return []
        prefix = title_prefix(title)
    except TitleError:
        return []  # a name the model counted that can never be a stored title
    leaves = sorted(name.rsplit("/", 1)[1] for name in await store.names(prefix))
    leaves.remove(MANIFEST)
    return [f"/{prefix}/{leaf}" for leaf in (MANIFEST, *leaves)]


async def plan(redis: aioredis.Redis, store: ObjectStore, top: int) -> dict[str, list[str]]:
    """The ``top`` forecast titles that are published, best first: their object paths.

    Looked for among the forecast's ``CANDIDATES * top`` best, so a run of popular names
    with no media (live events, titles not yet encoded) does not crowd the push out.
    """
    chosen: dict[str, list[str]] = {}
    for name, _score in forecast(await read_demand(redis), count=CANDIDATES * top):
        paths = await title_paths(store, title_id(name))
        if paths:
            chosen[title_id(name)] = paths
        if len(chosen) == top:
            break
    return chosen


async def push(http: aiohttp.ClientSession, edge: str, admin_key: str, paths: list[str]) -> Pushed:
    """Have ``edge`` fill ``paths``; raises ``aiohttp.ClientResponseError`` if it refuses."""
    results: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {admin_key}"}
    timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_S)
    for start in range(0, len(paths), BATCH):
        batch = {"paths": paths[start : start + BATCH]}
        async with http.post(
            f"{edge.rstrip('/')}/admin/preposition", json=batch, headers=headers, timeout=timeout
        ) as reply:
            reply.raise_for_status()
            results.update((await reply.json())["results"])
    return Pushed(edge, results)
