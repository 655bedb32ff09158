"""Benchmark: broadcaster ingest (WHIP, RTMP) against the synthetic source, same ladder.

Each source feeds one channel with the default ladder (720p/480p/360p + AAC,
2 s segments, 0.2 s chunks) in its own process, one after the other in the same
run, with Redis (embedded) and the origin (``livemesh origin``) shared:

- baseline: ``livemesh channel`` (the synthetic test pattern);
- WHIP: ``livemesh ingest`` fed 720p30 H.264 baseline + Opus by FFmpeg 8.1's own
  ``whip`` muxer (PyAV, its own process, with a P-256 certificate);
- RTMP: ``livemesh ingest`` fed 720p30 H.264 + AAC by Debian's ``ffmpeg`` CLI.

The publishers burn their send time into the picture as a bar code.  Figures:

- latency: for every chunk of the 360p rung (cut from the same encode loop as
  the top one, and the cheapest to decode here) read from the origin as it streams,
  its arrival minus the send time of its last picture (ingest), or minus that
  picture's capture time on the channel's timeline (synthetic baseline);
- CPU: CPU seconds per second of the channel process (ingest: network, decode,
  the slate/feed bridge, and the same ladder encode), publisher not counted
  (reported apart).

Run: ``python bench/ingest.py [--quick]``; ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import CLI, Procs, loadavg, print_result, ratio
from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import put_channel_config
from kernel.ports import free_port
from kernel.procfs import cpu_seconds
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.stats import summary_ms
from live.ingest.keys import RedisStreamKeys
from live.state import ChannelStore
from tests.ingest_helpers import (
    Publisher,
    chunk_latencies,
    p256_certificate,
    start_rtmp_publisher,
    start_whip_publisher,
)

RUNG = "v360"  # every rung is cut from the same encode loop: the lightest to decode
SIZE = (1280, 720)
ON_AIR_TRIES = 8  # segments waited for the first coded picture at the origin


async def first_chunk(store: ChannelStore, timeout_s: float = 60) -> None:
    """Returns once the channel has published a chunk (its epoch exists)."""
    async with asyncio.timeout(timeout_s):
        async for _event in store.events(after="0-0"):
            return


async def run_source(
    mode: str, redis_url: str, base: str, segments: int, workdir: Path
) -> dict[str, object]:
    channel, key = f"bench-{mode}", f"{mode}-bench-key"
    redis = redis_client(redis_url)
    store = ChannelStore(redis, channel)
    publisher: Publisher | None = None
    await put_channel_config(redis, ChannelConfig(channel))  # as the channels service would
    with Procs() as procs:
        try:
            if mode == "synthetic":
                server = procs.start(mode, [*CLI, "channel", channel, "--redis-url", redis_url])
            else:
                await RedisStreamKeys(redis).issue(channel, key)
                http_port, rtmp_port = free_port(), free_port()
                server = procs.start(
                    mode,
                    [*CLI, "ingest", "--channel", channel, "--redis-url", redis_url,
                     "--host", "127.0.0.1", "--http-port", str(http_port),
                     "--rtmp-port", str(rtmp_port)],
                    ready=f"http://127.0.0.1:{http_port}/healthz",
                )  # fmt: skip
            await first_chunk(store)
            started = time.monotonic()
            if mode == "whip":
                cert = p256_certificate(workdir)
                url = f"http://127.0.0.1:{http_port}/whip/{channel}"
                publisher = await start_whip_publisher(url, key, cert, SIZE)
            elif mode == "rtmp":
                url = f"rtmp://127.0.0.1:{rtmp_port}/live/{key}"
                publisher = await start_rtmp_publisher(url, SIZE)
            coded = mode != "synthetic"
            async with aiohttp.ClientSession() as http:
                on_air = AsyncRetrying(  # warm-up, and the wait for the broadcaster
                    stop=stop_after_attempt(ON_AIR_TRIES),
                    retry=retry_if_result(lambda got: not got[0]),
                    retry_error_callback=lambda _state: None,
                )
                if await on_air(read_segments, http, base, store, 1, coded) is None:
                    raise SystemExit(f"{mode}: no coded picture reached the origin")
                on_air_s = time.monotonic() - started
                cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
                pub0 = _publisher_cpu(publisher)
                latencies, stalls = await read_segments(http, base, store, segments, coded)
                wall = time.monotonic() - wall0
                cpu = cpu_seconds(server.pid) - cpu0
                pub = _publisher_cpu(publisher) - pub0
            procs.check_alive()
        finally:
            if publisher is not None:
                await publisher.stop()
            await redis.aclose()
    figures: dict[str, object] = {
        "latency": summary_ms([float(v) for v in latencies]),
        "cpu_s_per_s": round(cpu / wall, 3),
        "stalled_segments": stalls,
        "seconds": round(wall, 1),
    }
    if mode != "synthetic":
        figures["publisher_cpu_s_per_s"] = round(pub / wall, 3)
        figures["publish_to_on_air_s"] = round(on_air_s, 1)
    return figures


async def read_segments(
    http: aiohttp.ClientSession, base: str, store: ChannelStore, segments: int, coded: bool
) -> tuple[list[int], int]:
    """Chunk latencies of ``segments`` live segments, and how many the origin cut (stalls)."""
    latencies: list[int] = []
    stalls = 0
    for _ in range(segments):
        try:
            latencies += await chunk_latencies(http, base, store, RUNG, 1, coded)
        except aiohttp.ClientPayloadError:
            stalls += 1  # the channel fell behind for two segment durations
    return latencies, stalls


def _publisher_cpu(publisher: Publisher | None) -> float:
    if publisher is None:
        return 0.0
    return sum(cpu_seconds(p.pid) for p in publisher.processes)


async def bench(segments: int) -> dict[str, object]:
    with EmbeddedRedis() as embedded, tempfile.TemporaryDirectory() as tmp, Procs() as shared:
        base = shared.origin(embedded.url)
        results = {
            mode: await run_source(mode, embedded.url, base, segments, Path(tmp))
            for mode in ("synthetic", "whip", "rtmp")
        }
    baseline = results["synthetic"]
    out: dict[str, object] = {
        "bench": "ingest",
        "segments": segments,
        "loadavg": loadavg(),
        "whip": results["whip"],
        "rtmp": results["rtmp"],
        "baseline": baseline,
        "ratio": {},
    }
    ratios: dict[str, float] = {}
    base_latency = baseline["latency"]
    assert isinstance(base_latency, dict)
    for mode in ("whip", "rtmp"):
        figures = results[mode]
        latency = figures["latency"]
        assert isinstance(latency, dict)
        ratios[f"{mode}_latency_p50"] = ratio(latency["p50_ms"], base_latency["p50_ms"])
        ratios[f"{mode}_cpu"] = ratio(
            float(str(figures["cpu_s_per_s"])), float(str(baseline["cpu_s_per_s"]))
        )
    out["ratio"] = ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 segments per source, not 15")
    args = parser.parse_args()
    result = asyncio.run(bench(3 if args.quick else 15))
    for mode in ("baseline", "whip", "rtmp"):
        print(f"{mode}: {result[mode]}", flush=True)
    print_result(result)


if __name__ == "__main__":
    main()
