"""The edge's QoE events: CMCD in (query and headers), out to the stream in batches, never
in the cache key, and a Redis outage that costs events but never a segment."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio as aioredis

from edge.qoe import QoeConfig, QoeRecorder, encode, frame
from kernel.cmcd import CmcdStats
from kernel.keys import QOE_EVENTS
from kernel.qoe_event import FIELD, decode, unpack
from tests.test_edge_node import IMMUTABLE, SEG, Parent, _until, start_node

BODY = b"segment-bytes"


@pytest.fixture
async def parent() -> AsyncIterator[Parent]:
    p = Parent()
    p.static[SEG] = (200, BODY, IMMUTABLE)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def cmcd(payload: str) -> str:
    return "?CMCD=" + quote(payload, safe="")


async def test_cmcd_requests_become_events_and_never_reach_the_cache_key(
    parent: Parent, session: aiohttp.ClientSession, redis: aioredis.Redis, redis_url: str
) -> None:
    config = QoeConfig(redis_url=redis_url, batch=2, flush_s=0.05)
    node, url = await start_node(parents=(parent.url,), name="e1", region="eu", qoe=config)
    try:
        first = await session.get(url + SEG + cmcd('br=3200,bl=1200,mtp=48100,su,sid="s1"'))
        assert first.status == 200 and await first.read() == BODY
        headers = {
            "CMCD-Status": "bs,rtp=9000",
            "CMCD-Request": "bl=300",
            "cmcd-session": 'sid="s2"',
        }
        second = await session.get(url + SEG + cmcd("br=800"), headers=headers)
        assert second.headers["X-Cache"] == "HIT" and await second.read() == BODY
        plain = await session.get(url + SEG)  # no CMCD: no event
        assert plain.status == 200
        assert parent.requests[SEG] == 1  # one object whatever the CMCD said
        await _until(lambda: node.qoe is not None and node.qoe.emitter.sent == 2)
        entries = await redis.xrange(QOE_EVENTS)
        events = [decode(line) for _id, fields in entries for line in unpack(fields[FIELD])]
        assert len(events) == 2
        a, b = events
        assert a is not None and b is not None
        assert (a.edge, a.region, a.channel, a.rung) == ("e1", "eu", "c", "v1")
        assert (a.status, a.size, a.br, a.bl, a.mtp, a.su, a.bs, a.sid) == (
            200,
            len(BODY),
            3200,
            1200,
            48100,
            True,
            False,
            "s1",
        )
        assert (b.br, b.bl, b.bs, b.rtp, b.su, b.sid) == (800, 300, True, 9000, False, "s2")
        assert a.ttfb_ms >= 0 and b.ttfb_ms >= 0 and b.ts_ms >= a.ts_ms
    finally:
        await node.close()


async def test_redis_down_drops_the_oldest_events_and_every_segment_is_served(
    parent: Parent, session: aiohttp.ClientSession
) -> None:
    config = QoeConfig(redis_url="redis://127.0.0.1:1", batch=1000, flush_s=60, ring=10)
    node, url = await start_node(parents=(parent.url,), qoe=config)
    try:
        for i in range(30):
            r = await session.get(url + SEG + cmcd(f"bl={i * 100}"))
            assert r.status == 200 and await r.read() == BODY
        assert node.qoe is not None
        emitter = node.qoe.emitter
        assert len(emitter.ring) == 10 and emitter.dropped == 20
        newest = encode(emitter.ring[-1], "e", "eu", CmcdStats())
        assert newest is not None and (event := decode(newest)) is not None and event.bl == 2900
        await _until(lambda: emitter.flush())  # handed to the sender once it runs
        # nobody listens: the sender counts the batch dropped, nothing is kept
        await _until(lambda: emitter.dropped == 30 and emitter.failed_batches == 1)
        assert not emitter.ring and emitter.sent == 0
    finally:
        await node.close()


async def test_the_ring_drops_the_oldest_and_the_sender_sends_in_batches(
    redis: aioredis.Redis, redis_url: str
) -> None:
    recorder = QoeRecorder("e1", "eu", QoeConfig(redis_url=redis_url, batch=4, ring=5))
    emitter = recorder.emitter
    for i in range(8):
        recorder.note(f"/live/c/1/v{i}/7.m4s", (b"br%3D1", None), 200, 10, 0.0)
    assert [seen[0].split("/")[4] for seen in emitter.ring] == ["v3", "v4", "v5", "v6", "v7"]
    assert emitter.dropped == 3
    recorder.note(SEG, (b"xx%3D1", None), 200, 10, 0.0)  # nothing valid: no event
    assert emitter.dropped == 4 and emitter.ring[-1][0] == SEG
    running = asyncio.create_task(emitter.run())
    try:
        await _until(lambda: emitter.sent == 4 and emitter.cmcd_dropped == 1, timeout=20)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    (entry,) = await redis.xrange(QOE_EVENTS)  # the batch is one entry: one event a line
    events = [decode(line) for line in unpack(entry[1][FIELD])]
    assert [e.rung for e in events if e is not None] == ["v4", "v5", "v6", "v7"]
    assert emitter.sent == 4 and emitter.dropped == 4  # the sender's totals outlive it


async def test_the_sender_outlives_a_terminal_ctrl_c_and_ends_with_its_pipe(redis_url: str) -> None:
    """A Ctrl-C reaches the whole process group: the sender ignores it (no traceback) and
    keeps sending until its node closes stdin."""
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.qoe_sender", "--redis-url", redis_url, "--edge", "e1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert sender.stdin and sender.stdout and sender.stderr
    sender.stdin.write(frame([]))
    assert await asyncio.wait_for(sender.stdout.readline(), 30) == b"0 0 0 0\n"  # set up
    sender.send_signal(signal.SIGINT)
    sender.stdin.write(frame([]))
    assert await asyncio.wait_for(sender.stdout.readline(), 30) == b"0 0 0 0\n"  # alive
    sender.stdin.close()
    assert await asyncio.wait_for(sender.wait(), 30) == 0
    assert await sender.stderr.read() == b""
