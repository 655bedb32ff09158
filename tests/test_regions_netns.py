"""Two regions as network namespaces (loadrig.region_net): each with its own shield and two
edges (``livemesh edge`` processes inside the namespace), the live origin in the host's
namespace reachable from both over veth, viewers in the host's namespace ranked onto
edges by the playback service's steering (own region first, the other as fallback).
Killing one region's shield and edges moves its viewers to the other region with no
segment later than their buffer allows."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from kernel import clock
from live.origin import build_app
from livemesh.registry.v1 import registry_pb2
from loadrig.region_net import RegionNet, available
from services.playback.steering import rank_edges
from tests.test_edge_integration import CHUNKS, CONFIG, Channel, Node, seg_path

REGIONS = ("eu-west", "us-east")
VIEWERS_PER_REGION = 30
D_S = CONFIG.segment_ms / 1000
C_S = CONFIG.chunk_ms / 1000
LIVE_DELAY_S = 3.0  # a viewer plays media time t at AST + t + this: its buffer is this - D
BUFFER_S = LIVE_DELAY_S - D_S


def test_namespaces_and_veth_pairs_can_be_made_here() -> None:
    """Root with CAP_SYS_ADMIN: if this machine refused, this says what failed."""
    assert available() is None


@dataclass
class Region:
    net: RegionNet
    nodes: list[Node] = field(default_factory=list)

    @property
    def edges(self) -> list[Node]:
        return self.nodes[1:]


@pytest.fixture
async def regions() -> AsyncIterator[list[Region]]:
    made = [Region(RegionNet(name, 100 + i).create()) for i, name in enumerate(REGIONS)]
    yield made
    for region in made:
        for node in region.nodes:
            await node.stop()
        region.net.delete()


@pytest.fixture
async def origin(redis: aioredis.Redis, regions: list[Region]) -> AsyncIterator[int]:
    """The origin in the host's namespace, on each region's host end (one port)."""
    runner = web.AppRunner(build_app(redis), handle_signals=False)
    await runner.setup()
    first = web.TCPSite(runner, regions[0].net.host_ip, 0)
    await first.start()
    port = runner.addresses[0][1]
    await web.TCPSite(runner, regions[1].net.host_ip, port).start()
    yield port
    await runner.cleanup()


class RegionNode(Node):
    """A ``livemesh edge`` inside a region's namespace, listening on the region's address."""

    def __init__(self, net: RegionNet, name: str, *args: str) -> None:
        super().__init__(
            name, "--host", net.region_ip, "--region", net.region, "--no-tokens", *args
        )
        self.prefix = net.command([])


async def start_region(region: Region, origin_port: int) -> None:
    net = region.net
    origin_url = f"http://{net.host_ip}:{origin_port}"
    shield = await RegionNode(net, f"shield-{net.region}", "--parent", origin_url).start()
    region.nodes.append(shield)
    for letter in "ab":
        edge = RegionNode(
            net, f"edge-{net.region}-{letter}", "--parent", shield.url, "--fallback", origin_url
        )
        region.nodes.append(await edge.start())


async def produce(channel: Channel, until: asyncio.Event) -> None:
    """Chunk k of segment n at AST + n·D + (k+1)·C, as the encoder would."""
    n = 0
    while not until.is_set():
        for k in range(CHUNKS):
            due_ms = channel.epoch.start_ms + int((n * D_S + (k + 1) * C_S) * 1000)
            await asyncio.sleep(max(0.0, (due_ms - clock.now_ms()) / 1000))  # the encoder's pace
            await channel.chunk(n, k)
        n += 1


@dataclass
class Viewer:
    region: str
    edges: list[tuple[str, str]]  # (URL, region), ranked by steering, best first
    late_s: float = 0.0  # the most a segment came after its play time (0: never)
    moved_at: float | None = None  # monotonic time of the first segment from another region
    served_by: list[str] = field(default_factory=list)  # each segment's edge's region
    failures: Counter[str] = field(default_factory=Counter)  # fetches given up, by error


async def watch(
    viewer: Viewer,
    http: aiohttp.ClientSession,
    channel: Channel,
    first: int,
    until: asyncio.Event,
) -> None:
    """Fetch every segment from ``first`` on from the best edge that answers; each must be
    whole by the time it plays (AST + n·D + live delay)."""
    n, choice = first, 0
    ast = channel.epoch.start_ms / 1000
    while not until.is_set():
        await asyncio.sleep(max(0.0, ast + n * D_S - clock.now_ms() / 1000))  # its start time
        edge, region = viewer.edges[choice]
        try:
            async with http.get(edge + seg_path(n)) as response:
                response.raise_for_status()
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            viewer.failures[type(error).__name__ + str(error)[:80]] += 1
            choice = (choice + 1) % len(viewer.edges)  # the next edge steering ranked
            continue
        late = clock.now_ms() / 1000 - (ast + n * D_S + LIVE_DELAY_S)
        viewer.late_s = max(viewer.late_s, late)
        if region != viewer.region and viewer.moved_at is None:
            viewer.moved_at = time.monotonic()
        viewer.served_by.append(region)
        n += 1


def ranked(regions: list[Region], viewer_region: str) -> list[tuple[str, str]]:
    instances = [
        registry_pb2.Instance(
            name=node.name,
            address=node.url,
            region=region.net.region,
            health=registry_pb2.HEALTH_SERVING,
            content=[CONFIG.name],
        )
        for region in regions
        for node in region.edges
    ]
    return [(i.address, i.region) for i in rank_edges(instances, viewer_region, CONFIG.name)]


async def test_killing_a_region_moves_its_viewers_to_the_other_within_their_buffer(
    regions: list[Region], origin: int, redis: aioredis.Redis
) -> None:
    for region in regions:
        await start_region(region, origin)
    channel = Channel(redis)  # its epoch starts now, with every node up
    await channel.start()
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(channel, stop))
    viewers = [
        Viewer(region, ranked(regions, region))
        for region in REGIONS
        for _ in range(VIEWERS_PER_REGION)
    ]
    # a killed node's connections are refused at once; a stuck one is given up on
    timeout = aiohttp.ClientTimeout(total=D_S + BUFFER_S, sock_connect=0.5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        first = int((clock.now_ms() - channel.epoch.start_ms) / 1000 / D_S)
        watching = [asyncio.create_task(watch(v, http, channel, first, stop)) for v in viewers]
        try:
            await asyncio.sleep(3 * D_S)  # three segments of normal play before the kill
            before = [list(v.served_by) for v in viewers]
            lost = regions[0]
            killed_at = time.monotonic()
            for node in lost.nodes:
                node.kill()
            await asyncio.sleep(4 * D_S)  # four segments of play after it
        finally:
            stop.set()
            await asyncio.gather(*watching, producer)
    assert all(got and set(got) == {v.region} for got, v in zip(before, viewers, strict=True)), (
        before[0],
        viewers[0],
    )
    moved = [v for v in viewers if v.region == lost.net.region]
    assert all(v.moved_at is not None for v in moved)
    move_s = max(v.moved_at - killed_at for v in moved if v.moved_at is not None)
    print(f"region kill: {len(moved)} viewers moved in {move_s:.2f} s")  # the figure reported
    late = max(v.late_s for v in viewers)
    assert late <= 0, f"a segment came {late:.2f} s after its play time (buffer {BUFFER_S} s)"
    stayed = [v for v in viewers if v.region != lost.net.region]
    assert all(set(v.served_by) == {v.region} for v in stayed)
