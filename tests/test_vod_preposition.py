"""Pre-positioning: the popularity forecast, and ``livemesh vod preposition`` filling an edge.

The titles in the store are stand-ins (a few small objects under each title's MPD): the
origin serves whatever bytes a title holds, and the cache is what is under test here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from kernel.objectstore import LocalStore
from kernel.tokens import TokenSigner, tokenized
from live.origin import build_app
from live.vod.forecast import Demand, forecast, read_demand
from live.vod.preposition import plan, title_paths
from services.recommend.model import record_first_view
from tests.test_edge_integration import KEYS, ROOT, Node

ADMIN_KEY = "test-admin-key"
OBJECTS = ("manifest.mpd", "init-0.mp4", "chunk-0-00001.m4s", "chunk-0-00002.m4s")


def test_a_title_watched_with_a_hit_is_forecast_before_its_own_count_shows_it() -> None:
    demand = Demand(
        popularity={"hit": 100.0, "steady": 20.0, "niche": 1.0},
        co_watched={"hit": {"sequel": 9.0, "steady": 1.0}, "steady": {}, "niche": {}},
    )
    ranked = forecast(demand, count=10)
    assert [title for title, _ in ranked] == ["hit", "sequel", "steady", "niche"]
    assert dict(ranked)["sequel"] == pytest.approx(0.5 * 100 * 9 / 10)
    assert [title for title, _ in forecast(demand, count=2)] == ["hit", "sequel"]
    assert forecast(Demand({}, {}), count=3) == []


async def test_the_forecast_reads_the_recommendation_models_counts(redis: aioredis.Redis) -> None:
    for history in (["titles/a"], ["titles/a", "titles/b"], ["titles/a", "titles/c"]):
        for i, title in enumerate(history):
            await record_first_view(redis, title, history[:i])
    demand = await read_demand(redis)
    assert demand.popularity == {"titles/a": 3.0, "titles/b": 1.0, "titles/c": 1.0}
    assert demand.co_watched["titles/a"] == {"titles/b": 1.0, "titles/c": 1.0}
    assert forecast(demand, count=1)[0][0] == "titles/a"


async def publish(store: LocalStore, title: str) -> None:
    for name in OBJECTS:
        await store.put(f"vod/{title}/{name}", f"{title}/{name}".encode())


@pytest.fixture
async def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    for title in ("hit", "sequel", "steady", "cold"):
        await publish(store, title)
    return store


async def views(redis: aioredis.Redis) -> None:
    """``hit`` is the most watched, ``sequel`` is watched with it; ``gone`` is not stored."""
    histories = [["titles/gone"]] * 9 + [["titles/hit"]] * 6 + [["titles/steady"]] * 3
    histories += [["titles/hit", "titles/sequel"]] * 2 + [["titles/cold"]]
    for history in histories:
        for i, title in enumerate(history):
            await record_first_view(redis, title, history[:i])


async def test_the_plan_takes_published_titles_only(
    redis: aioredis.Redis, store: LocalStore
) -> None:
    await views(redis)
    chosen = await plan(redis, store, top=3)
    assert list(chosen) == ["hit", "sequel", "steady"]  # "gone" is popular but not stored
    assert chosen["hit"][0] == "/vod/hit/manifest.mpd"
    assert sorted(chosen["hit"]) == sorted(f"/vod/hit/{name}" for name in OBJECTS)
    assert await title_paths(store, "gone") == []
    assert await title_paths(store, "../hit") == []


@pytest.fixture
async def edge(redis: aioredis.Redis, store: LocalStore) -> AsyncIterator[Node]:
    runner = web.AppRunner(build_app(redis, vod_store=store), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    node = await Node("pre-edge", "--parent", origin, "--admin-key", ADMIN_KEY).start()
    yield node
    await node.stop()
    await runner.cleanup()


async def run_preposition(redis_url: str, admin_key: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "LIVEMESH_EDGE_ADMIN_KEY": admin_key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "command.cli", "vod", "preposition", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def first_request(http: aiohttp.ClientSession, edge: Node, path: str) -> str:
    title = path.split("/")[2]
    token = TokenSigner.from_spec(KEYS).sign(f"/vod/{title}/", "viewer", 60)
    async with http.get(edge.url + tokenized(token, path)) as reply:
        assert reply.status == 200, path
        assert await reply.read() == path.removeprefix("/vod/").encode()
        return reply.headers["X-Cache"]


async def test_preposition_fills_the_edge_with_the_forecast_titles_before_any_viewer(
    redis: aioredis.Redis, redis_url: str, store: LocalStore, edge: Node
) -> None:
    await views(redis)
    common = ["--edge", edge.url, "--top", "2", "--store", str(store.root)]
    status, output = await run_preposition(redis_url, "wrong-key", *common)
    assert status == 1 and "403" in output, output
    status, output = await run_preposition(redis_url, ADMIN_KEY, *common)
    assert status == 0, output
    assert f"{edge.url}: 8/8 objects of hit, sequel" in output
    async with aiohttp.ClientSession() as http:
        for title, expected in (("hit", "HIT"), ("sequel", "HIT"), ("steady", "MISS")):
            for name in OBJECTS:
                assert await first_request(http, edge, f"/vod/{title}/{name}") == expected, title
