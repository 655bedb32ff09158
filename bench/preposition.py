"""Benchmark: first-request hit ratio on an edge, with and without pre-positioning.

A catalogue of stand-in titles (an MPD, an init segment and media segments of fixed
sizes, in a store directory the origin serves) and a view history recorded into Redis
the way the profile service records it (:func:`services.recommend.model.record_first_view`):
each viewer's first title drawn from a Zipf popularity, the next ones a "sequel" (the
following title) half the time.  Two fresh edges sit on the same origin; one is filled
by the forecast (:mod:`live.vod.preposition`, as ``livemesh vod preposition`` does).

Measured on both edges, each object asked for once in the same order:

- ``forecast``: every object of the forecast's titles (what was pushed): the share a
  pre-positioned edge answers from its cache on the first request;
- ``next_views``: the next viewers (drawn from the same process, a later seed), each
  asking for their title's MPD, init and first segments: the first-request hit ratio a
  real audience sees, where viewers of the same title also warm the plain edge.

Run: ``python bench/preposition.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from _harness import CLI, Procs, free_port, loadavg, print_result

from kernel.objectstore import LocalStore
from kernel.redis_server import EmbeddedRedis, redis_client
from live.vod.preposition import plan, push
from services.recommend.model import record_first_view

ADMIN_KEY = "bench-admin-key"
SEGMENT_BYTES = 16 << 10
FIRST_SEGMENTS = 3  # media segments a next viewer asks for (with the MPD and init)


def title_objects(segments: int) -> list[str]:
    return ["manifest.mpd", "init-0.mp4", *(f"chunk-0-{n:05d}.m4s" for n in range(1, segments + 1))]


async def publish(store: LocalStore, titles: int, segments: int) -> None:
    for t in range(titles):
        for name in title_objects(segments):
            await store.put(f"vod/t{t:03d}/{name}", name.encode().ljust(SEGMENT_BYTES, b"."))


def viewers(titles: int, count: int, seed: int) -> list[list[str]]:
    """Each viewer's titles in watch order: a Zipf pick, then sequels half the time."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(titles)]
    out = []
    for _ in range(count):
        first = rng.choices(range(titles), weights)[0]
        watched = [first]
        while rng.random() < 0.5 and watched[-1] + 1 < titles:
            watched.append(watched[-1] + 1)
        out.append([f"titles/t{t:03d}" for t in watched])
    return out


async def first_hits(http: aiohttp.ClientSession, edge: str, paths: list[str]) -> float:
    """The share of ``paths`` the edge answers from its cache, each asked for once, in order."""
    hits = 0
    for path in paths:
        async with http.get(edge + path) as reply:
            await reply.read()
            hits += reply.headers.get("X-Cache") == "HIT"
    return hits / max(len(paths), 1)


def next_view_paths(next_viewers: list[list[str]], segments: int) -> list[str]:
    names = title_objects(segments)[: 2 + FIRST_SEGMENTS]
    paths = []
    for history in next_viewers:
        title = history[0].removeprefix("titles/")
        paths += [f"/vod/{title}/{name}" for name in names]
    return paths


async def measure(
    redis_url: str, store: LocalStore, args: argparse.Namespace, plain: str, filled: str
) -> dict[str, Any]:
    redis = redis_client(redis_url)
    try:
        for history in viewers(args.titles, args.history, seed=1):
            for i, title in enumerate(history):
                await record_first_view(redis, title, history[:i])
        chosen = await plan(redis, store, args.top)
    finally:
        await redis.aclose()
    pushed_paths = [p for paths in chosen.values() for p in paths]
    next_paths = next_view_paths(viewers(args.titles, args.next_viewers, seed=2), args.segments)
    async with aiohttp.ClientSession() as http:
        pushed = await push(http, filled, ADMIN_KEY, pushed_paths)
        result: dict[str, Any] = {"titles_pushed": len(chosen), "objects_pushed": pushed.filled}
        for label, paths in (("next_views", next_paths), ("forecast", pushed_paths)):
            result[f"{label}_hit_ratio_without"] = round(await first_hits(http, plain, paths), 3)
            result[f"{label}_hit_ratio_with"] = round(await first_hits(http, filled, paths), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small catalogue and audience")
    args = parser.parse_args()
    scale = 1 if args.quick else 5
    args.titles, args.segments, args.top = 40 * scale, 10 * scale, 4 * scale
    args.history, args.next_viewers = 300 * scale, 100 * scale
    with (
        tempfile.TemporaryDirectory(prefix="bench-preposition-") as tmp,
        EmbeddedRedis() as redis_server,
        Procs() as procs,
    ):
        store = LocalStore(Path(tmp) / "store")
        asyncio.run(publish(store, args.titles, args.segments))
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        procs.start(
            "origin",
            [*CLI, "origin", "--port", str(port), "--redis-url", redis_server.url,
             "--vod-store", str(store.root)],
            ready=f"{origin}/time",
        )  # fmt: skip
        plain = procs.edge("plain", "edge", [origin], tokens=False)
        filled = start_admin_edge(procs, origin)
        result = asyncio.run(measure(redis_server.url, store, args, plain, filled))
    print_result(
        {"bench": "preposition", "quick": args.quick, "titles": args.titles,
         "top": args.top, **result, "loadavg": loadavg()}
    )  # fmt: skip


def start_admin_edge(procs: Procs, origin: str) -> str:
    """An edge with the admin API on (``Procs.edge`` starts them without)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "filled",
        [*CLI, "edge", "--host", "127.0.0.1", "--port", str(port), "--name", "filled",
         "--tier", "edge", "--log-level", "WARNING", "--parent", origin, "--no-tokens",
         "--admin-key", ADMIN_KEY],
        ready=f"{base}/healthz",
    )  # fmt: skip
    return base


if __name__ == "__main__":
    main()
