"""The QoE event codec, window sums and figures, and the stream processor on a real Redis:
consumer groups, takeover of a dead consumer's entries, no double count."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from edge.qoe import encode as encode_seen
from kernel import clock
from kernel.cmcd import CmcdStats
from kernel.keys import QOE_EVENTS, QOE_GROUP, qoe_health, qoe_second
from kernel.ports import free_port
from kernel.qoe_event import FIELD, QoeEvent, decode, pack
from services.qoe.aggregate import Batch, SessionEdges, figures
from services.qoe.consumer import Consumer, ConsumerConfig
from services.qoe.health import SETTLE_S, Health
from services.qoe.probe import LIVE_S, READY_S, Beat

WINDOW = 5


def event(ts_ms: int, **fields: object) -> QoeEvent:
    base: dict[str, object] = {
        "edge": "e1",
        "region": "eu",
        "channel": "demo",
        "rung": "v720",
        "status": 200,
        "size": 1000,
        "ttfb_ms": 20,
        "ts_ms": ts_ms,
    }
    base.update(fields)
    return QoeEvent(**base)  # type: ignore[arg-type]


def test_the_codec_round_trips_and_refuses_what_is_no_event() -> None:
    e = event(123, br=3200, bl=9000, mtp=48100, rtp=12000, bs=True, su=True, sid="a|b")
    back = decode(e.encode())
    assert back == event(123, br=3200, bl=9000, mtp=48100, rtp=12000, bs=True, su=True, sid="a_b")
    assert decode(b"too|few") is None
    assert decode(b"|".join([b"x"] * 15)) is None


def test_window_figures_are_ratios_of_the_sums() -> None:
    batch = Batch()
    t0 = 1_700_000_000_000
    batch.add(event(t0, br=3000, mtp=10000, su=True, ttfb_ms=100))
    batch.add(event(t0 + 1, br=1000, bs=True))
    batch.add(event(t0 + 2, status=502, edge="e2"))
    batch.add(event(t0 + 3, status=0))
    (start,) = batch.increments()
    window = batch.increments()[start]
    found = figures(window)
    e1 = found[("edge", "e1")]
    assert e1.requests == 3
    assert e1.rebuffer_ratio == pytest.approx(1 / 3)
    assert e1.startup_share == pytest.approx(1 / 3) and e1.startup_ms == 100
    assert e1.bitrate_kbps == 2000 and e1.throughput_kbps == 10000
    assert e1.error_rate == pytest.approx(1 / 3)
    assert found[("edge", "e2")].error_rate == 1 and found[("edge", "e2")].score == 0
    assert found[("channel", "demo")].requests == 4
    assert found[("rung", "v720")].requests == 4
    assert e1.score < found[("edge", "e1")].score + 1e-9 < 1
    assert start == t0 // 1000


def test_a_stall_is_laid_at_the_edge_the_session_stalled_on() -> None:
    """CMCD's bs tells of a stall since the last request: a session steered from e1 to e2
    reports e1's stall to e2, which must not be blamed for it."""
    sessions = SessionEdges(max_sessions=2)
    batch = Batch(sessions)
    t0 = 1_700_000_000_000
    batch.add(event(t0, sid="s1", edge="e1"))
    batch.add(event(t0, sid="s1", edge="e1", bs=True))  # stalled on e1, told to e1
    batch.add(event(t0, sid="s1", edge="e2", bs=True))  # stalled on e1, told to e2
    batch.add(event(t0, sid="s1", edge="e2"))
    batch.add(event(t0, edge="e2", bs=True))  # no session: where it was told
    found = figures(next(iter(batch.increments().values())))
    assert found[("edge", "e1")].rebuffer_ratio == 1.0  # 2 stalls, 2 requests
    assert found[("edge", "e2")].rebuffer_ratio == pytest.approx(1 / 3)
    assert found[("edge", "e2")].requests == 3
    assert sessions.note(event(t0, sid="s2")) == (None, False)
    assert sessions.note(event(t0, sid="s3")) == (None, False)
    assert sessions.last == {"s3": "e1"} and sessions.playing == {"s3"}  # emptied when full


# What players send (query mode, URL-encoded): dash.js 5.2 on a live start sets bs and su
# on its first media requests (buffer empty at the live edge, before anything played) and
# on the first request after a stall; hls.js sets su until it plays and bs only after.
DASH = "/live/demo/1/v720/"
DASH_START = [
    ("/live/demo/manifest.mpd", 'cid="demo",ot=m,sf=d,sid="dash-1",st=l,v=1'),
    (DASH + "init.mp4", 'br=3000,cid="demo",ot=i,sf=d,sid="dash-1",st=l,su,v=1'),
    (DASH + "1.m4s", 'bl=0,br=3000,bs,cid="demo",d=2000,mtp=25000,ot=v,sf=d,sid="dash-1",'
     'st=l,su,tb=3000,v=1'),
    (DASH + "2.m4s", 'bl=0,br=3000,bs,cid="demo",d=2000,mtp=25000,ot=v,sf=d,sid="dash-1",'
     'st=l,su,tb=3000,v=1'),
]  # fmt: skip
DASH_PLAYING = (DASH + "3.m4s", 'bl=1900,br=3000,cid="demo",d=2000,dl=1900,mtp=31000,ot=v,'
                'sf=d,sid="dash-1",st=l,tb=3000,v=1')  # fmt: skip
DASH_STALLED = (DASH + "4.m4s", 'bl=0,br=3000,bs,cid="demo",d=2000,mtp=900,ot=v,sf=d,'
                'sid="dash-1",st=l,su,tb=3000,v=1')  # fmt: skip
HLS = "/live/demo/1/v360/"
HLS_SESSION = [
    ("/live/demo/v360.m3u8", 'cid="demo",ot=m,sf=h,sid="hls-1",st=l,su,v=1'),
    (HLS + "1.m4s", 'br=800,cid="demo",d=2000,ot=v,sf=h,sid="hls-1",st=l,su,v=1'),
    (HLS + "2.m4s", 'bl=1800,br=800,cid="demo",d=2000,ot=v,sf=h,sid="hls-1",st=l,v=1'),
    (HLS + "3.m4s", 'bl=0,br=800,bs,cid="demo",d=2000,ot=v,sf=h,sid="hls-1",st=l,su,v=1'),
]  # fmt: skip


def starved(requests: list[tuple[str, str]]) -> int:
    """The rebuffers a consumer counts of these requests, through the edge's encoder."""
    batch = Batch(SessionEdges())
    for i, (path, payload) in enumerate(requests):
        seen = (path, quote(payload, safe="").encode(), None, 200, 1000, 20, 1_700_000_000_000 + i)
        line = encode_seen(seen, "e1", "eu", CmcdStats())
        e = decode(line) if line is not None else None
        assert e is not None, (path, payload)
        batch.add(e)
    (sums,) = batch.increments().values()
    return sums.get("edge=e1|starved", 0)


def test_start_up_buffering_is_no_rebuffer_and_a_stall_after_playing_is_one() -> None:
    assert starved(DASH_START) == 0  # dash.js's start: bs and su before anything played
    assert starved([*DASH_START, DASH_PLAYING]) == 0
    assert starved([*DASH_START, DASH_PLAYING, DASH_STALLED]) == 1  # bs and su again: a stall
    assert starved(HLS_SESSION) == 1
    # a session whose first request tells of starvation has not played yet
    assert starved([DASH_STALLED, DASH_PLAYING]) == 0
    # a later request that says it is no start (no su) tells of a stall (the load rig's)
    no_su = 'bl=0,br=800,bs,d=2000,ot=v,sf=d,sid="rig-1",st=l,v=1'
    assert starved([(HLS + "1.m4s", 'br=800,ot=v,sid="rig-1",su'), (HLS + "2.m4s", no_su)]) == 1


async def add(redis: aioredis.Redis, events: list[QoeEvent]) -> None:
    pipe = redis.pipeline(transaction=False)
    for e in events:
        pipe.xadd(QOE_EVENTS, {FIELD: e.encode()})
    await pipe.execute()


def consumer(redis: aioredis.Redis, name: str, claim_idle_ms: int = 30_000) -> Consumer:
    config = ConsumerConfig(name=name, window_s=WINDOW, batch=50, block_ms=10)
    config = ConsumerConfig(**{**config.__dict__, "claim_idle_ms": claim_idle_ms})
    return Consumer(redis, config, lambda times, now: None)


async def requests_in(redis: aioredis.Redis, start: int) -> int:
    return int(await redis.hget(qoe_second(start), "edge=e1|requests") or 0)


async def drain(c: Consumer) -> None:
    """Steps until a read finds nothing new."""
    while await c.step():
        pass


async def test_two_consumers_share_the_stream_and_count_each_event_once(
    redis: aioredis.Redis,
) -> None:
    t0 = clock.now_ms()
    start = t0 // 1000
    await add(redis, [event(t0, br=100 + i) for i in range(300)])
    a, b = consumer(redis, "a"), consumer(redis, "b")
    await a.ensure_group()
    await b.ensure_group()  # the group exists: no error
    while await a.step() + await b.step():
        pass
    assert a.stats.events > 0 and b.stats.events > 0
    assert a.stats.events + b.stats.events == 300
    assert await requests_in(redis, start) == 300
    assert await redis.xpending(QOE_EVENTS, QOE_GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_dead_consumers_entries_are_taken_over_and_a_slow_one_commits_nothing(
    redis: aioredis.Redis,
) -> None:
    t0 = clock.now_ms()
    start = t0 // 1000
    await add(redis, [event(t0) for _ in range(40)])
    a = consumer(redis, "a")
    await a.ensure_group()
    a._own_pending = False
    taken = await a._read(">", block=None)  # a reads 40 entries, then "dies" before commit
    assert len(taken) == 40
    assert await requests_in(redis, start) == 0
    b = consumer(redis, "b", claim_idle_ms=0)  # any pending entry counts as abandoned
    b._own_pending = False
    assert await b.step() == 40  # XAUTOCLAIM, then the commit
    assert b.stats.claimed == 40
    assert await requests_in(redis, start) == 40
    # a was only slow: its commit is refused whole, so nothing is counted twice
    assert await a.process(taken) == 0
    assert a.stats.conflicts == 1 and a.stats.events == 0
    await drain(a)
    assert await requests_in(redis, start) == 40


async def test_a_restarted_consumer_counts_its_own_pending_entries_first(
    redis: aioredis.Redis,
) -> None:
    t0 = clock.now_ms()
    start = t0 // 1000
    await add(redis, [event(t0) for _ in range(30)])
    await redis.xadd(QOE_EVENTS, {FIELD: pack([b"garbage", event(t0).encode()])})
    first = consumer(redis, "a")
    await first.ensure_group()
    first._own_pending = False
    await first._read(">", block=None)  # read, then killed
    again = consumer(redis, "a")  # the same name after a restart
    assert await again.step() == 31  # entries acked
    assert again.stats.garbage == 1 and again.stats.events == 31
    assert await requests_in(redis, start) == 31


async def test_health_writes_each_edges_score_from_the_last_whole_window(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    health = Health(redis, WINDOW, registry)
    now_ms = clock.now_ms()
    monkeypatch.setattr(clock, "now_ms", lambda: now_ms)  # no second ticks over meanwhile
    last = health.last_window()
    assert last == now_ms // 1000 - SETTLE_S - WINDOW
    first, final = last * 1000, (last + WINDOW) * 1000 - 1  # the window's first and last ms
    # a plays (in the second before the window), then stalls
    await add(
        redis, [event(first - 1, sid="a"), event(first, bs=True, sid="a"), event(final, sid="b")]
    )
    await add(redis, [event(final, sid="a"), event(final, edge="e2", br=800)])
    # the second before the window and the settling second after it are no part of it
    await add(redis, [event(first - 1, bs=True, sid="c"), event(final + 1, bs=True, sid="d")])
    c = consumer(redis, "a")
    await c.ensure_group()
    await drain(c)
    edges = await health.update()
    assert set(edges) == {"e1", "e2"}
    e1 = await redis.hgetall(qoe_health("e1"))
    assert float(e1[b"rebuffer_ratio"]) == pytest.approx(1 / 3) and int(e1[b"requests"]) == 3
    assert int(e1[b"sessions"]) == 2  # a and b, over the window's seconds
    assert int(e1[b"window"]) == last and int(e1[b"window_s"]) == WINDOW
    assert float(e1[b"score"]) == pytest.approx(edges["e1"].score) and edges["e1"].score < 1
    assert 0 < await redis.ttl(qoe_health("e1")) <= 3 * WINDOW
    sample = registry.get_sample_value(
        "livemesh_qoe_bitrate_kbps", {"dimension": "edge", "value": "e2"}
    )
    assert sample == 800


@contextlib.asynccontextmanager
async def qoe_process(redis_url: str, *args: str) -> AsyncIterator[str]:
    """A ``livemesh qoe ARGS`` process on ``redis_url``, its READY line once it is up;
    stopped (and its exit checked clean) after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "command.cli", "qoe", "--redis-url", redis_url,
        "--metrics-port", "0", *args, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("READY qoe "), line
        yield line
    finally:
        proc.terminate()
        assert await proc.wait() == 0


async def test_livemesh_qoe_counts_the_stream_and_serves_the_figures(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """The process end to end: a consumer in the group, /metrics, the edges' health."""
    async with qoe_process(redis_url, "--window", "1", "--consumer", "t1") as line:
        assert line.startswith("READY qoe t1 "), line
        metrics_url = line.split()[-1] + "/metrics"
        async with aiohttp.ClientSession() as http, asyncio.timeout(10):
            while True:  # as edges do, events keep coming; a window shows once it has ended
                now = clock.now_ms()
                await add(redis, [event(now, br=1500), event(now, br=2500)])
                text = await (await http.get(metrics_url)).text()
                if 'livemesh_qoe_bitrate_kbps{dimension="edge",value="e1"} 2000.0' in text:
                    break
                await asyncio.sleep(0.1)
        health = await redis.hgetall(qoe_health("e1"))
        assert float(health[b"bitrate_kbps"]) == 2000 and float(health[b"score"]) == 1.0


async def status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def test_livemesh_qoe_is_ready_while_it_reads_and_commits_and_alive_while_it_turns(
    redis_url: str,
) -> None:
    """/readyz and /healthz (the Deployment's probes) from the consume loop: ready on a
    Redis it reads, not ready (the error named) but alive on one that refuses it; and
    ``livemesh health qoe`` asks /healthz on the metrics port."""
    async with qoe_process(redis_url) as line, aiohttp.ClientSession() as http:
        base = line.split()[-1]
        async with asyncio.timeout(10):
            while (await status(http, base + "/readyz"))[0] != 200:
                await asyncio.sleep(0.05)  # the first read blocks up to --block-ms
        assert await status(http, base + "/healthz") == (200, "ok\n")
        assert "livemesh_qoe_events" in (await status(http, base + "/metrics"))[1]
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with qoe_process(dead) as line, aiohttp.ClientSession() as http:
        base = line.split()[-1]
        code, text = await status(http, base + "/readyz")
        assert code == 503 and "no successful read and commit since start" in text, text
        assert await status(http, base + "/healthz") == (200, "ok\n")
        port = base.rsplit(":", 1)[1]
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "command.cli", "health", "qoe", "--metrics-port", port,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await done.communicate()
        assert done.returncode == 0 and out.decode().strip().endswith("/healthz: healthy")


def test_a_beat_is_alive_while_the_loop_turns_and_ready_while_it_succeeds() -> None:
    beat = Beat(turned_ms=0)
    assert beat.problem("/healthz", LIVE_S * 1000) is None
    assert "idle for 31 s" in str(beat.problem("/healthz", (LIVE_S + 1) * 1000))
    beat.ok_ms, beat.turned_ms = 0, 40_000  # failing since its last success at 0
    beat.error = "ConnectionError()"
    assert beat.problem("/healthz", 40_000) is None
    assert beat.problem("/readyz", READY_S * 1000) is None
    assert beat.problem("/readyz", 40_000) == (
        "no successful read and commit for 40 s: ConnectionError()"
    )
