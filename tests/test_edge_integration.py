"""Origin, shields and edges as real processes on loopback, fed through a real Redis.

The origin runs in the test's loop (``live.origin.build_app``) behind a middleware
that counts what reaches it; shields and edges are ``livemesh edge`` processes.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from edge import rendezvous
from kernel import clock
from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import put_channel_config
from kernel.epoch import Epoch, Representation
from kernel.tokens import TokenSigner, tokenized
from live.state import ChannelStore
from tests.origin_helpers import CountingOrigin

ROOT = Path(__file__).resolve().parent.parent
KEYS = "it:" + "5a" * 32
# D = 2 s, C = 0.2 s: the origin holds a next-segment request up to 2·D for its first chunk
CONFIG = ChannelConfig("edgeit", segment_ms=2000, chunk_ms=200, window_s=30)
CHUNKS = CONFIG.timeline.chunks_per_segment
VIDEO = Representation("v1", "video", "avc1.64001f", 1_000_000, 15360, 640, 360, 30)


def chunk_bytes(segment: int, chunk: int) -> bytes:
    return f"<{segment}:{chunk}>".encode() * 700


def seg_path(segment: int) -> str:
    return f"/live/{CONFIG.name}/e1/v1/{segment}.m4s"


class Node:
    """A ``livemesh edge`` process; ready once it prints its URL."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.args = args
        self.prefix: list[str] = []  # what to run it under (`ip netns exec NS`: a region)
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Node:
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            sys.executable,
            "-m",
            "command.cli",
            "edge",
            "--port",
            "0",
            "--name",
            self.name,
            "--token-keys",
            KEYS,
            "--log-level",
            "WARNING",
            *self.args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(15):
            line = (await self.proc.stdout.readline()).decode()
        assert line.startswith("READY "), line
        self.url = line.split()[-1]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Channel:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.store = ChannelStore(redis, CONFIG.name)
        self.epoch = Epoch("e1", clock.now_ms(), (VIDEO,))

    async def start(self) -> None:
        await put_channel_config(self.store.redis, CONFIG)
        await self.store.start_epoch(self.epoch, {"v1": b"init-v1"}, CONFIG.window_s)

    async def chunk(self, segment: int, chunk: int) -> None:
        await self.store.publish_chunk(
            self.epoch,
            "v1",
            segment,
            chunk,
            chunk_bytes(segment, chunk),
            chunk == CHUNKS - 1,
            CONFIG.window_s,
        )

    async def segment(self, segment: int) -> None:
        for k in range(CHUNKS):
            await self.chunk(segment, k)


@pytest.fixture
async def channel(redis: aioredis.Redis) -> Channel:
    ch = Channel(redis)
    await ch.start()
    return ch


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
        yield s


async def start_nodes(*nodes: Node) -> list[Node]:
    return list(await asyncio.gather(*(n.start() for n in nodes)))


async def stop_nodes(nodes: list[Node]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))


async def shield_and_two_edges(origin: CountingOrigin) -> tuple[Node, list[Node]]:
    """The demo topology: one shield on the origin, two edges on the shield."""
    shield = await Node("shield", "--parent", origin.url, "--no-tokens").start()
    edges = await start_nodes(
        Node("edge-a", "--parent", shield.url, "--fallback", origin.url),
        Node("edge-b", "--parent", shield.url, "--fallback", origin.url),
    )
    return shield, edges


def signed(path: str, ttl_s: int = 60, now_s: float | None = None) -> str:
    token = TokenSigner.from_spec(KEYS).sign(f"/live/{CONFIG.name}/", "viewer", ttl_s, now_s)
    return tokenized(token, path)


async def test_500_viewers_across_two_edges_cost_the_origin_one_request_per_shield(
    origin: CountingOrigin, channel: Channel, http: aiohttp.ClientSession
) -> None:
    shield, edges = await shield_and_two_edges(origin)
    try:
        await channel.segment(0)
        path = seg_path(1)  # the next segment: the origin holds it until its first chunk
        viewers = 500

        async def view(n: int) -> tuple[bytes, bytes]:
            async with http.get(edges[n % 2].url + signed(path)) as resp:
                assert resp.status == 200
                first = await resp.content.readexactly(len(chunk_bytes(1, 0)))
                got_first.append(n)
                if len(got_first) == viewers:
                    all_have_first.set()
                return first, await resp.read()

        got_first: list[int] = []
        all_have_first = asyncio.Event()
        tasks = [asyncio.create_task(view(n)) for n in range(viewers)]
        async with asyncio.timeout(15):
            await origin.arrival(path).wait()
        await channel.chunk(1, 0)
        async with asyncio.timeout(15):
            await all_have_first.wait()  # every viewer has chunk 0 ...
        position = await channel.store.position("e1", "v1")
        assert position is not None and not position.complete  # ... before the segment is whole
        for k in range(1, CHUNKS):
            await channel.chunk(1, k)
        results = await asyncio.gather(*tasks)
        whole = b"".join(chunk_bytes(1, k) for k in range(CHUNKS))
        assert {first + rest for first, rest in results} == {whole}
        assert origin.requests[path] == 1
        # and the bytes equal the origin's own answer for the now complete segment
        async with http.get(origin.url + path) as direct:
            assert await direct.read() == whole

        # tokens: checked at the edge, never reaching the cache or the origin
        before = sum(origin.requests.values())
        good = signed(path)
        tampered = good.replace(".dmlld2Vy.", ".YXR0YWNrZXI.")  # session "viewer" → "attacker"
        assert tampered != good
        for bad in (signed(path, ttl_s=5, now_s=1000.0), tampered, "/t/garbage" + path, path):
            async with http.get(edges[0].url + bad) as resp:
                assert resp.status == 403, bad
        assert sum(origin.requests.values()) == before
    finally:
        await stop_nodes([*edges, shield])


async def test_killing_a_shield_moves_its_objects_to_the_other_without_cutting_viewers(
    origin: CountingOrigin, channel: Channel, http: aiohttp.ClientSession
) -> None:
    shields = await start_nodes(
        Node("shield-1", "--parent", origin.url, "--no-tokens"),
        Node("shield-2", "--parent", origin.url, "--no-tokens"),
    )
    edge = await Node(
        "edge", *(a for s in shields for a in ("--parent", s.url)), "--fallback", origin.url
    ).start()
    try:
        await channel.segment(0)
        path = seg_path(1)
        first_url, second_url = rendezvous.order([s.url for s in shields], path)
        doomed = next(s for s in shields if s.url == first_url)
        await channel.chunk(1, 0)
        await channel.chunk(1, 1)
        async with http.get(edge.url + signed(path)) as resp:
            head = await resp.content.readexactly(2 * len(chunk_bytes(1, 0)))
            assert origin.requests[path] == 1
            doomed.kill()  # the shield serving this object dies mid-segment
            assert doomed.proc is not None
            await doomed.proc.wait()
            for k in range(2, CHUNKS):
                await channel.chunk(1, k)
            body = head + await resp.read()
        assert body == b"".join(chunk_bytes(1, k) for k in range(CHUNKS))
        assert origin.requests[path] == 2  # once through each shield, never from the edge
        # later objects that hashed to the dead shield now go through the other one
        await channel.segment(2)
        async with http.get(edge.url + signed(seg_path(2))) as resp:
            assert await resp.read() == b"".join(chunk_bytes(2, k) for k in range(CHUNKS))
        async with http.get(second_url + "/metrics") as resp:
            text = await resp.text()
        assert "livemesh_edge_upstream_fetches_total" in text
    finally:
        await stop_nodes([edge, *shields])


async def test_manifest_storm_reaches_the_origin_once_per_lifetime_per_shield(
    origin: CountingOrigin, channel: Channel, http: aiohttp.ClientSession
) -> None:
    shield, edges = await shield_and_two_edges(origin)
    mpd = f"/live/{CONFIG.name}/manifest.mpd"
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waves = 0
        while loop.time() - started < 2.5:
            replies = await asyncio.gather(
                *(http.get(edges[n % 2].url + signed(mpd)) for n in range(100))
            )
            assert {r.status for r in replies} == {200}
            for r in replies:
                await r.read()
            waves += 1
            await asyncio.sleep(0.25)  # the storm's own pacing, not a synchronisation
        elapsed = loop.time() - started
        lifetime = 1.0  # the origin's manifest max-age
        assert waves >= 4
        assert 1 <= origin.requests[mpd] <= math.ceil(elapsed / lifetime) + 1
    finally:
        await stop_nodes([*edges, shield])
