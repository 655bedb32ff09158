"""Session records in Redis: batched writes, a cancelled caller, failures, older records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from kernel.rpc import jsonmap
from kernel.rpc.process import connect_redis
from livemesh.playback.v1 import playback_pb2 as pb
from services.playback.sessions import BatchedWriter, SessionStore


@pytest.fixture
async def store(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[SessionStore]:
    made = SessionStore(connect_redis(redis_url, decode=False))
    yield made
    await made.close()


def session(n: int) -> pb.PlaybackSession:
    return pb.PlaybackSession(
        name=f"playbackSessions/s{n}",
        account="accounts/a",
        content="channels/demo",
        state=pb.SESSION_STATE_PLAYING,
        manifest_urls=[pb.ManifestUrl(url=f"http://e/{n}", rank=1)],
    )


async def test_concurrent_saves_share_pipelines_and_each_waits_for_its_own(
    store: SessionStore, redis: aioredis.Redis
) -> None:
    commands_before = int((await redis.info("stats"))["total_commands_processed"])
    await asyncio.gather(*(store.save(session(n), 60, request_id=f"r{n}") for n in range(50)))
    for n in range(50):  # each save returned only once Redis held it
        assert await store.load(f"s{n}") == session(n)
        assert await store.created_by(f"r{n}") == f"s{n}"
        assert 0 < await redis.ttl(f"lm:pb:s:s{n}") <= 60
    written = int((await redis.info("stats"))["total_commands_processed"]) - commands_before
    assert written >= 100  # a pipeline is its commands: all were sent
    assert await store.load("missing") is None and await store.created_by("missing") is None


async def test_a_cancelled_caller_cancels_only_its_wait(
    store: SessionStore, redis: aioredis.Redis
) -> None:
    first = asyncio.create_task(store.save(session(1), 60))
    # callbacks run in order: first queues its write and waits, then is cancelled, then the
    # pipeline (started by the save below, which queues before first) writes both
    asyncio.get_running_loop().call_soon(first.cancel)
    await store.save(session(2), 60)
    assert first.cancelled()
    assert await store.load("s1") == session(1)


async def test_a_failed_pipeline_fails_every_caller_of_its_batch(redis_url: str) -> None:
    unreachable = connect_redis("redis://127.0.0.1:1/0", decode=False)
    writer = BatchedWriter(unreachable)
    results = await asyncio.gather(
        *(writer.set([(f"k{n}", b"v", 5)]) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
    await unreachable.aclose()


async def test_reads_records_an_earlier_version_wrote_as_json(
    store: SessionStore, redis: aioredis.Redis
) -> None:
    await redis.set("lm:pb:s:s7", json.dumps(jsonmap.to_dict(session(7))), ex=60)
    assert await store.load("s7") == session(7)
