"""Redundant pipelines behind a real shield and edge: a segment replaced at the origin while
a client reads it through the edge reaches the client whole, as one pipeline's copy.

The origin runs in the test's loop; the shield and the edge are ``livemesh edge``
processes (the demo topology: the edge asks the shield, and the origin when the shield
fails).  Without the edge's check of the copy's ETag on resuming, a cut from the shield
made the edge continue from the origin with the other copy's tail: a 200 body that was
half of each encode.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kernel.channel_config import AudioRung, ChannelConfig, VideoRung
from kernel.channel_config_store import put_channel_config
from kernel.epoch import Position
from kernel.processes import kill
from kernel.supervise import Backoff, ProcessSpec, Stack
from live.package import Chunk
from live.pipelines import PIPELINES, PipelineStore
from live.state import ChannelStore
from tests.origin_helpers import CHUNKS, CountingOrigin, chunk_bytes
from tests.origin_helpers import CONFIG as ORIGIN_CONFIG
from tests.test_edge_integration import Node, stop_nodes
from tests.test_pipelines import (
    first_epoch,
    own_chunks,
    own_init,
    publish_synthetic,
    two_pipelines,
)

Attempt = tuple[str, bytes]  # how one GET ended ("whole", "cut", "503"), and its body


@pytest.fixture
async def nodes(origin: CountingOrigin) -> AsyncIterator[tuple[Node, Node]]:
    """A shield on the origin, an edge on the shield with the origin as its fallback."""
    shield = await Node("shield", "--parent", origin.url, "--no-tokens").start()
    edge = await Node(
        "edge", "--parent", shield.url, "--fallback", origin.url, "--no-tokens"
    ).start()
    yield shield, edge
    await stop_nodes([edge, shield])


async def read_as_a_player(
    http: aiohttp.ClientSession, url: str, first_piece: asyncio.Event
) -> list[Attempt]:
    """GET ``url`` until a whole answer, as players do with a cut segment; every attempt."""
    attempts: list[Attempt] = []
    while len(attempts) < 4:
        got = b""
        try:
            async with http.get(url) as response:
                if response.status == 503:
                    attempts.append(("503", b""))
                    continue
                assert response.status == 200, (url, response.status)
                async for piece in response.content.iter_any():
                    got += piece
                    first_piece.set()
            attempts.append(("whole", got))
            return attempts
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            attempts.append(("cut", got))
    raise AssertionError(f"{url}: no whole answer in four tries: {attempts}")


async def replaced_total(http: aiohttp.ClientSession, node: Node) -> float:
    async with http.get(node.url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("livemesh_edge_upstream_replaced_total"):
            return float(line.split()[-1])
    raise AssertionError("no replaced counter in the edge's metrics")


async def test_a_segment_replaced_mid_read_reaches_an_edge_client_whole_never_spliced(
    redis: aioredis.Redis,
    origin: CountingOrigin,
    nodes: tuple[Node, Node],
    http: aiohttp.ClientSession,
) -> None:
    store, a, b = await two_pipelines(redis)
    await publish_synthetic(a, 0)
    await publish_synthetic(a, 1)
    shield, edge = nodes
    first_piece = asyncio.Event()
    url = f"{edge.url}/live/{ORIGIN_CONFIG.name}/e1/v1/0.m4s"
    reading = asyncio.create_task(read_as_a_player(http, url, first_piece))
    async with asyncio.timeout(10):
        await first_piece.wait()  # the client has a's first bytes through the edge
    await redis.delete(store.keys.alive("a"))  # a dies: its alive key is gone
    for k in range(CHUNKS):
        await publish_synthetic(b, k)  # b's copy, another encode, replaces a's
    attempts = await reading

    assert await store.generation("e1", "v1", 0) == 1
    b_copy = b"".join(chunk_bytes("b", 0, k) for k in range(CHUNKS))
    assert attempts[-1] == ("whole", b_copy)
    cut = [body for how, body in attempts if how == "cut"]
    assert cut and cut[0].startswith(chunk_bytes("a", 0, 0))  # a's bytes were cut, not spliced
    assert await replaced_total(http, edge) == 1  # the origin's other copy was refused

    # a node resuming at the shield gets the rest only of the copy it began (RFC 9110 If-Range)
    shield_url = f"{shield.url}/live/{ORIGIN_CONFIG.name}/e1/v1/0.m4s"
    for tag, status, body in (('"g0"', 200, b_copy), ('"g1"', 206, b_copy[10:])):
        headers = {"Range": "bytes=10-", "If-Range": tag}
        async with http.get(shield_url, headers=headers) as response:
            assert (response.status, response.headers["ETag"]) == (status, '"g1"')
            assert await response.read() == body


PROBE = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"]
PROBE += ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"]


def probe(init: bytes, media: bytes) -> tuple[int, str]:
    """Frames ffprobe decodes from ``init + media``, and what it complained of."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(init + media)
        file.flush()
        done = subprocess.run(
            [*PROBE, file.name],
            capture_output=True,
            text=True,
            check=False,
        )
    frames = done.stdout.strip()
    return int(frames) if frames.isdigit() else 0, done.stderr.strip()


@pytest.fixture
def stack() -> Iterator[Stack]:
    pipelines = Stack(Backoff())
    yield pipelines
    pipelines.stop()


# One small rung: two encoders of it keep up on a loaded two-core machine, so segments are
# served chunk by chunk (two starved encoders make only defective copies, served whole).
REP = "v144"
TINY = ChannelConfig(
    "edgekill",
    video=(VideoRung(REP, 256, 144, 150_000),),
    audio=AudioRung("a64", 64_000),
    segment_ms=1000,
    chunk_ms=200,
    window_s=30,
)


async def test_a_pipeline_killed_mid_segment_under_an_edge_client_who_gets_a_copy_that_decodes(
    redis: aioredis.Redis,
    redis_url: str,
    nodes: tuple[Node, Node],
    http: aiohttp.ClientSession,
    stack: Stack,
) -> None:
    """Real encoders: b starts after a, as a restarted pipeline joins. Each segment is
    encoded afresh, so b's bytes are a's, and the death of the pipeline serving a segment
    mid-way carries the segment on from the other's copy: the client reading it through
    the edge gets it whole in one answer (no replacement, no cut), and it decodes."""
    config = TINY
    await put_channel_config(redis, config)
    store = ChannelStore(redis, config.name)
    env = {"REDIS_URL": redis_url}
    stack.start(ProcessSpec("a", ["channel", config.name, "--pipeline", "a"], None, env))
    epoch = await first_epoch(store)
    stack.start(ProcessSpec("b", ["channel", config.name, "--pipeline", "b"], None, env))
    joined = await own_position(store, "b", epoch.id)
    n = joined.segment + 1  # b makes all of it, from a keyframe of its own
    _shield, edge = nodes
    for _segment in range(6):  # a starved encoder may make a segment whole in one burst
        first_piece = asyncio.Event()
        url = f"{edge.url}/live/{config.name}/{epoch.id}/{REP}/{n}.m4s"
        reading = asyncio.create_task(read_as_a_player(http, url, first_piece))
        await until_served_chunk(store, epoch.id, n, 1)
        async with asyncio.timeout(10):
            await first_piece.wait()
        raw_owner = await redis.hget(store.keys.owners(epoch.id), f"{REP}:{n}")
        assert raw_owner is not None
        owner = raw_owner.decode().split(":")[0]
        served = await store.position(epoch.id, REP)
        if served is not None and served.segment == n and not served.complete:
            kill(dict(stack.children)[owner], signal.SIGKILL)  # mid-segment, the client reading
            break
        await reading  # whole before it could be caught mid-way: the next one
        n += 1
    else:
        raise AssertionError("no segment caught mid-way in six")
    attempts = await reading

    other = next(p for p in PIPELINES if p != owner)
    await until_complete(store, other, epoch.id, n + 1)
    copies = {p: b"".join(await own_chunks(store, p, epoch.id, REP, n)) for p in PIPELINES}
    how, body = attempts[-1]
    assert how == "whole" and body == copies[other]  # never a splice of two copies
    frames, complaints = probe(await own_init(store, other, epoch.id, REP), body)
    assert complaints == "" and frames > 0
    defective = {
        p: await redis.hexists(store.keys.pipeline(p).defects(epoch.id), f"{REP}:{n}")
        for p in PIPELINES
    }
    if not defective[other]:  # an encoder that fell behind on a loaded machine skips frames
        assert frames == config.segment_ms * 30 // 1000
        if not defective[owner]:  # what was served of the killed copy was the other's bytes
            assert await store.generation(epoch.id, REP, n) == 0
            assert attempts == [("whole", body)]


async def own_position(store: ChannelStore, pipeline: str, epoch: str) -> Position:
    """A pipeline's first position in ``epoch`` (it has published a chunk)."""
    async for _event in store.events(block_ms=30_000):
        raw = await store.redis.hget(store.keys.pipeline(pipeline).position(epoch), REP)
        if raw is not None:
            return Position.decode(raw)
    raise AssertionError(f"pipeline {pipeline} published nothing")


async def until_served_chunk(store: ChannelStore, epoch: str, segment: int, chunk: int) -> None:
    async for event in store.events(block_ms=30_000):
        if (event.epoch, event.rep) == (epoch, REP) and (event.segment, event.chunk) >= (
            segment,
            chunk,
        ):
            return
    raise AssertionError(f"segment {segment} chunk {chunk} never served")


async def until_complete(store: ChannelStore, pipeline: str, epoch: str, segment: int) -> None:
    """Until ``pipeline`` has made segment ``segment`` of REP whole."""
    async for _event in store.events(block_ms=30_000):
        raw = await store.redis.hget(store.keys.pipeline(pipeline).position(epoch), REP)
        if raw is not None and Position.decode(raw).has_complete(segment):
            return
    raise AssertionError(f"pipeline {pipeline} did not complete segment {segment}")


PART = re.compile(r'#EXT-X-PART:.*BYTERANGE="(\d+)@(\d+)"')


async def test_the_parts_of_a_replaced_segment_are_the_served_copys_byte_ranges(
    redis: aioredis.Redis,
    origin: CountingOrigin,
    nodes: tuple[Node, Node],
    http: aiohttp.ClientSession,
) -> None:
    """LL-HLS parts are byte ranges of the one segment object: after a replacement the
    playlist lists the new copy's ranges, and the edge answers them from the new copy."""
    config = ORIGIN_CONFIG
    store, a, b = await two_pipelines(redis)
    epoch = await store.find_epoch("e1")
    assert epoch is not None
    copies = {"a": [b"A%d" % k * 300 for k in range(CHUNKS)]}  # two encodes, sizes differ
    copies["b"] = [b"B%d" % k * (350 + 40 * k) for k in range(CHUNKS)]

    async def publish(pipeline: PipelineStore, k: int) -> None:
        chunk = Chunk(0, k, copies[pipeline.name][k], last=k == CHUNKS - 1)
        await pipeline.publish_chunk(epoch, "v1", chunk, None, config.timeline, config.window_s)

    _shield, edge = nodes
    segment = f"{edge.url}/live/{config.name}/e1/v1/0.m4s"
    for k in range(3):
        await publish(a, k)
    size = len(copies["a"][0])
    async with http.get(segment, headers={"Range": f"bytes={size}-{2 * size - 1}"}) as part:
        assert (part.status, part.headers["ETag"]) == (206, '"g0"')
        assert await part.read() == copies["a"][1]
    # a part of a's copy not made yet, awaited at the edge when a dies
    waiting = asyncio.ensure_future(
        http.get(segment, headers={"Range": f"bytes={3 * size}-{4 * size - 1}"})
    )
    await redis.delete(store.keys.alive("a"))
    for k in range(CHUNKS):
        await publish(b, k)
    async with await waiting as late:
        assert late.status != 206  # never a's range cut from b's copy: the player asks again

    async with http.get(f"{edge.url}/live/{config.name}/v1.m3u8") as playlist:
        ranges = [(int(n), int(o)) for n, o in PART.findall(await playlist.text())]
    offsets = [sum(len(c) for c in copies["b"][:k]) for k in range(CHUNKS)]
    assert ranges == [(len(c), o) for c, o in zip(copies["b"], offsets, strict=True)]
    for k, (length, offset) in enumerate(ranges):
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        async with http.get(segment, headers=headers) as part:
            assert (part.status, part.headers["ETag"]) == (206, '"g1"')
            assert await part.read() == copies["b"][k]
