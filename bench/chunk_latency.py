"""Benchmark: chunk latency from the packager to a waiting HTTP client of the origin.

Starts its own Redis (embedded), origin and live channel (default ladder) as
separate processes, then for every segment of the top rung holds a request for
the next segment at the origin and reads it as it streams.  Each CMAF chunk's
arrival (its ``mdat`` complete on the client) is compared with the moment the
packager stored it: the Redis server's own timestamp in the chunk's event id.

Baseline, in the same run: a Redis client that learns of each chunk by a
blocking XREAD and fetches its bytes (the floor any reader of Redis can reach).

Target (issue 2): origin p99 <= 10 ms.  Run: ``python bench/chunk_latency.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import create_channel_config
from kernel.isobmff import ChunkScanner
from kernel.keys import ChannelKeys
from kernel.ports import free_port
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.stats import summary_ms
from kernel.supervise import wait_ready
from live.state import ChannelStore

CHANNEL = "bench"
REP = "v720"


async def origin_reader(
    base: str, epoch: str, first: int, last: int, arrivals: dict[tuple[int, int], int]
) -> None:
    """Hold a request for each next segment and note when each chunk arrives."""
    done: list[int] = []  # ordinals of the chunks the last read completed
    async with aiohttp.ClientSession() as session:
        for number in range(first, last + 1):
            url = f"{base}/live/{CHANNEL}/{epoch}/{REP}/{number}.m4s"
            scanner = ChunkScanner(lambda ordinal, _n, _s, _p: done.append(ordinal))
            async with session.get(url) as response:
                response.raise_for_status()
                async for data in response.content.iter_any():
                    now = time.time_ns() / 1e6
                    scanner.feed(data, now)
                    for ordinal in done:
                        arrivals[(number, ordinal)] = int(now * 1000)
                    done.clear()


async def redis_reader(
    store: ChannelStore, epoch: str, stop: asyncio.Event, arrivals: dict[tuple[int, int], int]
) -> None:
    """The baseline: a blocking XREAD, then the chunk's bytes, straight from Redis."""
    events = store.events(block_ms=1000)
    while not stop.is_set():
        event = await anext(events)
        if event.rep == REP and event.epoch == epoch:
            await store.chunks(epoch, REP, event.segment, event.chunk)
            arrivals[(event.segment, event.chunk)] = int(time.time_ns() / 1e3)


async def stored_at(redis: aioredis.Redis, epoch: str) -> dict[tuple[int, int], float]:
    """When Redis stored each chunk (ms, from the event ids)."""
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(ChannelKeys(CHANNEL).events)
    )
    out: dict[tuple[int, int], float] = {}
    for entry_id, fields in entries:
        if fields[b"e"].decode() == epoch and fields[b"r"].decode() == REP:
            out[(int(fields[b"n"]), int(fields[b"k"]))] = int(entry_id.split(b"-")[0])
    return out


def latencies(
    arrivals: dict[tuple[int, int], int], stored: dict[tuple[int, int], float]
) -> list[float]:
    """Arrival minus storage, in ms; arrivals are in microseconds, ids in whole ms."""
    return [arrivals[k] / 1000 - stored[k] - 0.5 for k in arrivals if k in stored]


async def measure(redis_url: str, origin: str, seconds: int) -> dict[str, object]:
    redis = redis_client(redis_url)
    store = ChannelStore(redis, CHANNEL)
    while (epoch := await store.current_epoch()) is None or not await store.position(epoch.id, REP):
        await asyncio.sleep(0.05)  # the channel process gives no other start signal
    position = await store.position(epoch.id, REP)
    assert position is not None
    first = position.segment + 1
    last = first + seconds // 2 - 1
    origin_arrivals: dict[tuple[int, int], int] = {}
    redis_arrivals: dict[tuple[int, int], int] = {}
    stop = asyncio.Event()
    baseline = asyncio.create_task(redis_reader(store, epoch.id, stop, redis_arrivals))
    await origin_reader(origin, epoch.id, first, last, origin_arrivals)
    stop.set()
    await baseline
    stored = await stored_at(redis, epoch.id)
    await redis.aclose()
    in_range = {k: v for k, v in redis_arrivals.items() if first <= k[0] <= last}
    return {
        "origin": summary_ms(latencies(origin_arrivals, stored)),
        "redis": summary_ms(latencies(in_range, stored)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    args = parser.parse_args()
    seconds = 10 if args.quick else 60
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with EmbeddedRedis() as server:
        cli = [sys.executable, "-m", "command.cli"]
        create_channel_config(server.url, ChannelConfig(CHANNEL))  # as the channels service would
        procs = [
            subprocess.Popen([*cli, "origin", "--port", str(port), "--redis-url", server.url]),
            subprocess.Popen(
                [*cli, "channel", CHANNEL, "--redis-url", server.url], stderr=subprocess.DEVNULL
            ),
        ]
        try:
            if not wait_ready(f"{origin}/time", threading.Event()):
                raise SystemExit("the origin did not start")
            figures = asyncio.run(measure(server.url, origin, seconds))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    origin_fig, redis_fig = figures["origin"], figures["redis"]
    assert isinstance(origin_fig, dict) and isinstance(redis_fig, dict)
    print(f"chunks measured: {origin_fig['count']} ({seconds} s of {REP})")
    print(
        f"origin → client : p50 {origin_fig['p50_ms']} ms, p99 {origin_fig['p99_ms']} ms, "
        f"max {origin_fig['max_ms']} ms  (target p99 ≤ 10 ms)"
    )
    print(
        f"redis  → reader : p50 {redis_fig['p50_ms']} ms, p99 {redis_fig['p99_ms']} ms (baseline)"
    )
    result = {
        "origin_p50_ms": origin_fig["p50_ms"],
        "origin_p99_ms": origin_fig["p99_ms"],
        "baseline_redis_p50_ms": redis_fig["p50_ms"],
        "baseline_redis_p99_ms": redis_fig["p99_ms"],
        "p99_ratio": round(origin_fig["p99_ms"] / max(redis_fig["p99_ms"], 0.01), 2),
        "chunks": origin_fig["count"],
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
