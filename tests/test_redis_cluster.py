"""The live path's Redis state on a real Redis Cluster (tests/redis_cluster.py).

Every key of a channel carries the hash tag ``{channel}``, so its transactions stay in
one slot and the cluster client takes them. Killing the master of that slot mid-stream:
its replica takes over, and every chunk published before and after reads back intact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError, TimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from kernel.config import ConfigError
from kernel.epoch import Epoch, Position, Representation
from kernel.redis_server import check_redis, redis_client, shared_client
from live.state import ChannelStore, ChunkEvent
from tests.redis_cluster import LocalCluster, local_cluster

CHANNEL = "demo"
REP = "v"
CHUNKS_PER_SEGMENT = 10
CHUNKS_BEFORE = 25
CHUNKS_AFTER = 25
CHUNK_INTERVAL_S = 0.01
WINDOW_S = 600
FAILOVER_LIMIT_S = 30.0  # node timeout 1 s: a failover takes a few; this bounds a failure
EPOCH = Epoch("1000", 1_000, (Representation(REP, "video", "avc1.64001f", 1, 15360),))


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


def chunk_data(index: int) -> bytes:
    return f"chunk {index} ".encode() * 50


def place(index: int) -> tuple[int, int, bool]:
    """Segment, chunk and whether it is the segment's last, of the index-th chunk."""
    segment, chunk = divmod(index, CHUNKS_PER_SEGMENT)
    return segment, chunk, chunk == CHUNKS_PER_SEGMENT - 1


async def publish(store: ChannelStore, index: int) -> None:
    """Publish one chunk, retrying while the cluster fails over (as a packager must)."""
    segment, chunk, last = place(index)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((ConnectionError, TimeoutError)),
        wait=wait_fixed(0.05),
        stop=stop_after_delay(FAILOVER_LIMIT_S),
        reraise=True,
    ):
        with attempt:
            await store.publish_chunk(EPOCH, REP, segment, chunk, chunk_data(index), last, WINDOW_S)


async def read_back(store: ChannelStore, count: int) -> None:
    """Every chunk, in order, once, with the bytes it was published with."""
    segments = (count + CHUNKS_PER_SEGMENT - 1) // CHUNKS_PER_SEGMENT
    for segment in range(segments):
        data, position = await store.chunks(EPOCH.id, REP, segment)
        first = segment * CHUNKS_PER_SEGMENT
        expected = [chunk_data(i) for i in range(first, min(count, first + CHUNKS_PER_SEGMENT))]
        assert data == expected, f"segment {segment}"
        assert position is not None
    last_segment, last_chunk, last = place(count - 1)
    assert position == Position(last_segment, last_chunk, last)


async def test_channel_state_lives_on_a_cluster_and_survives_a_master_failover(
    cluster: LocalCluster,
) -> None:
    redis = shared_client(cluster.url)
    store = ChannelStore(redis, CHANNEL)
    try:
        await store.start_epoch(EPOCH, {REP: b"init"}, WINDOW_S)
        for index in range(CHUNKS_BEFORE):
            await publish(store, index)
            await asyncio.sleep(CHUNK_INTERVAL_S)
        await read_back(store, CHUNKS_BEFORE)

        # the master goes between two chunks of the stream: a chunk in flight at the
        # moment of the kill may or may not have been applied, which a retry cannot tell
        # (see the report on publish_chunk's idempotence), so the test does not aim at it
        master = cluster.master_of(store.keys.segment(EPOCH.id, REP, 0))
        master.process.kill()
        killed = time.monotonic()
        await publish(store, CHUNKS_BEFORE)
        failover_s = time.monotonic() - killed
        print(f"\nmaster {master.port} killed: writes resumed after {failover_s:.2f} s")
        assert cluster.master_of(store.keys.segment(EPOCH.id, REP, 0)) is not master
        for index in range(CHUNKS_BEFORE + 1, CHUNKS_BEFORE + CHUNKS_AFTER):
            await publish(store, index)
            await asyncio.sleep(CHUNK_INTERVAL_S)

        await read_back(store, CHUNKS_BEFORE + CHUNKS_AFTER)
        assert await store.init_segment(EPOCH.id, REP) == b"init"
        assert await store.current_epoch() == EPOCH
        announced = await first_events(store, CHUNKS_BEFORE + CHUNKS_AFTER)
        assert [(e.segment, e.chunk, e.last) for e in announced] == [
            place(i) for i in range(CHUNKS_BEFORE + CHUNKS_AFTER)
        ]
    finally:
        await redis.aclose()


async def first_events(store: ChannelStore, count: int) -> list[ChunkEvent]:
    """The channel's first ``count`` chunk events, read as a viewer's origin reads them."""
    seen: list[ChunkEvent] = []
    async with asyncio.timeout(5):
        async for event in store.events(after="0-0"):
            seen.append(event)
            if len(seen) == count:
                return seen
    return seen


async def test_the_setting_must_say_cluster_for_a_cluster_and_only_for_one(
    cluster: LocalCluster,
) -> None:
    check_redis(cluster.url)
    node = cluster.url.removeprefix("redis+cluster://")
    with pytest.raises(ConfigError, match=r"REDIS_URL=redis://.* names a Redis Cluster node"):
        check_redis(f"redis://{node}")
    single = cluster.start_node(cluster=False)
    with pytest.raises(ConfigError, match=r"REDIS_URL=redis\+cluster://.* single node"):
        check_redis(f"redis+cluster://127.0.0.1:{single.port}")
    client = redis_client(cluster.url)  # one client, every channel's slot on its master
    try:
        stores = [ChannelStore(client, channel) for channel in ("a", "b", "c", "d", "e")]
        assert len({cluster.master_of(s.keys.epoch).port for s in stores}) > 1
        for store in stores:
            await store.start_epoch(EPOCH, {REP: b"init"}, WINDOW_S)
            for index in range(3):
                await publish(store, index)
        for store in stores:
            await read_back(store, 3)
    finally:
        await client.aclose()
