"""Redundant pipelines: real encoders, a real Redis, a real origin, real process deaths."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import signal
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import aiohttp
import av
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from kernel import clock
from kernel.channel_config import AudioRung, ChannelConfig, VideoRung
from kernel.channel_config_store import put_channel_config
from kernel.epoch import Epoch, Position
from kernel.processes import kill
from kernel.procfs import cpu_seconds
from kernel.redis_server import shared_client
from kernel.supervise import Backoff, ProcessSpec, Stack
from live.cmaf import Sample, fragment, read_tfdt, styp
from live.encode import AAC_PREROLL_FRAMES, AudioEncoder, VideoEncoder
from live.inspect import chunk_defect
from live.package import Chunk
from live.pipelines import PIPELINES, PipelineStore
from live.source import TestPattern, Tone
from live.state import ChannelStore
from tests.live_helpers import running_channel, small_config, wait_for_segments
from tests.origin_helpers import CHUNKS, VIDEO, chunk_bytes
from tests.origin_helpers import CONFIG as ORIGIN_CONFIG
from tests.redis_cluster import local_cluster

SEGMENTS = 3


async def own_chunks(
    store: ChannelStore, pipeline: str, epoch: str, rep: str, n: int
) -> list[bytes]:
    keys = store.keys.pipeline(pipeline)
    return [_bytes(c) for c in await store.redis.lrange(keys.segment(epoch, rep, n), 0, -1)]


async def own_init(store: ChannelStore, pipeline: str, epoch: str, rep: str) -> bytes:
    init = await store.redis.get(store.keys.pipeline(pipeline).init(epoch, rep))
    assert init is not None
    return _bytes(init)


def decoded_frames(init: bytes, media: bytes, kind: str) -> int:
    with av.open(io.BytesIO(init + media), "r") as container:
        frames = container.decode(video=0) if kind == "video" else container.decode(audio=0)
        return len(list(frames))


async def test_two_pipelines_share_one_epoch_and_make_the_same_bytes(
    redis: aioredis.Redis,
) -> None:
    config = small_config("twins")
    store = ChannelStore(redis, config.name)
    first, second = PipelineStore(store, "a"), PipelineStore(store, "b")
    async with (
        running_channel(store, config, pipeline=first) as a,
        running_channel(store, config, pipeline=second) as b,
    ):
        assert a.epoch is not None and b.epoch == a.epoch  # b joined a's epoch
        epoch = a.epoch
        reps = [r.id for r in epoch.representations]
        await wait_for_segments(store, epoch.id, reps, count=SEGMENTS + 1)

    defects = {p: await defective_segments(store, p, epoch.id) for p in PIPELINES}
    identical = 0
    for rep in epoch.representations:
        init = await own_init(store, "a", epoch.id, rep.id)
        # a player switches between the two without re-initialising: one init, byte for byte
        assert init == await own_init(store, "b", epoch.id, rep.id)
        assert init == await store.init_segment(epoch.id, rep.id)
        for n in range(SEGMENTS):
            from_a = await own_chunks(store, "a", epoch.id, rep.id, n)
            from_b = await own_chunks(store, "b", epoch.id, rep.id, n)
            served, _ = await store.chunks(epoch.id, rep.id, n)
            copies = {"a": from_a, "b": from_b}
            clean = [copies[p] for p in PIPELINES if (rep.id, n) not in defects[p]]
            if clean:  # an encoder that fell behind skipped frames: its copy is not served
                assert served in clean
            if len(clean) == 2:
                assert from_a == from_b  # same numbers, timestamps and bytes
                identical += 1
            media = b"".join(served)
            assert read_tfdt(media) * 1000 // rep.timescale in range(n * 1000, n * 1000 + 22)
            # whole where a clean copy was made (a loaded machine may starve both encoders)
            due = (30 if rep.kind == "video" else 46) if clean else 1
            owner = await redis.hget(store.keys.owners(epoch.id), f"{rep.id}:{n}")
            chunks = {p: len(c) for p, c in copies.items()} | {"served": len(served)}
            assert decoded_frames(init, media, rep.kind) >= due, (n, owner, chunks, defects)
    assert identical >= len(epoch.representations) * (SEGMENTS - 1)


async def defective_segments(
    store: ChannelStore, pipeline: str, epoch: str
) -> set[tuple[str, int]]:
    fields = await store.redis.hkeys(store.keys.pipeline(pipeline).defects(epoch))
    found = set()
    for field in fields:
        rep, segment, *_chunk = _text(field).split(":")
        found.add((rep, int(segment)))
    return found


async def test_a_defective_chunk_is_never_served(redis: aioredis.Redis) -> None:
    config = small_config("defect")
    store = ChannelStore(redis, config.name)
    broken = (1, 2)  # segment 1, chunk 2 of v360: truncated by pipeline a

    def truncate(rep: str, chunk: Chunk) -> Chunk:
        if rep == "v360" and (chunk.segment, chunk.chunk) == broken:
            return dataclasses.replace(chunk, data=chunk.data[: len(chunk.data) // 2])
        return chunk

    async with (
        running_channel(store, config, pipeline=PipelineStore(store, "a"), tamper=truncate) as a,
        running_channel(store, config, pipeline=PipelineStore(store, "b")),
    ):
        assert a.epoch is not None
        epoch = a.epoch
        await wait_for_segments(store, epoch.id, [r.id for r in epoch.representations], 3)

    reason = await redis.hget(store.keys.pipeline("a").defects(epoch.id), "v360:1:2")
    assert reason is not None and _text(reason).startswith("unreadable")
    init = await own_init(store, "b", epoch.id, "v360")
    served, position = await store.chunks(epoch.id, "v360", 1)
    assert position is not None and position.has_complete(1)
    if ("v360", 1) not in await defective_segments(store, "b", epoch.id):  # b kept up
        assert served == await own_chunks(store, "b", epoch.id, "v360", 1)  # never a's
        assert decoded_frames(init, b"".join(served), "video") == 30
    # where a's chunks 0 and 1 were b's bytes too (encoders that kept up), the switch needed
    # no replacement; otherwise the segment was replaced, never spliced
    head_of_a = (await own_chunks(store, "a", epoch.id, "v360", 1))[:2]
    same = head_of_a == served[:2]
    assert await redis.hget(store.keys.owners(epoch.id), "v360:1") == (b"b:0" if same else b"b:1")


def test_encoders_that_skipped_different_frames_make_the_same_next_segment() -> None:
    """A redundant pipeline's encoder starts afresh at each segment: one that fell behind
    and skipped frames (or was restarted) makes its peer's bytes again from the next
    segment on, so the served copy can go on from either without a replacement."""
    rung, frames = VideoRung("v", 320, 180, 300_000), 30
    pattern = TestPattern(320, 180, 30, frames)

    def segments(skipped: range) -> list[list[bytes]]:
        encoder = VideoEncoder(rung, 30, frames, identical=True)
        made: list[list[bytes]] = [[], []]
        for i in (i for i in range(2 * frames) if i not in skipped):
            frame = pattern.frame(i, 0)
            frame.pts, frame.time_base = i, Fraction(1, 30)
            made[i // frames] += [u.data for u in encoder.encode(frame, keyframe=i % frames == 0)]
        return made

    kept_up, fell_behind = segments(range(0)), segments(range(10, 20))
    assert kept_up[0] != fell_behind[0]
    assert kept_up[1] == fell_behind[1]


def test_an_audio_encoder_joining_a_segment_late_makes_the_same_bytes_from_it() -> None:
    """AAC carries state from frame to frame: a redundant pipeline's audio encoder starts
    afresh at each segment (fed the frames before, as a joining pipeline's is), so one
    started a segment late makes its peer's bytes from there, with no unit missing."""
    rung, tone = AudioRung("a64", 64_000), Tone(48_000, 2)
    segment_units = 94  # about 2 s of 1024-sample frames

    def sound(i: int) -> av.AudioFrame:
        frame = tone.frame(i)
        frame.pts, frame.time_base = i * 1024, Fraction(1, 48_000)
        return frame

    def units(first: int) -> dict[int, bytes]:
        encoder = AudioEncoder(rung, identical=True)
        encoder.preroll([sound(i) for i in range(max(0, first - AAC_PREROLL_FRAMES), first)])
        made = []
        for i in range(first, 4 * segment_units):
            made += encoder.encode(sound(i), keyframe=i % segment_units == 0)
        assert [u.index for u in made] == list(range(first, 4 * segment_units - 1))
        return {u.index: u.data for u in made}

    from_start, joined = units(0), units(2 * segment_units)
    assert all(from_start[i] == data for i, data in joined.items())


def test_inspection_names_missing_frames_and_broken_timestamps() -> None:
    units = range(6, 12)  # chunk 1 of segment 0 at 30 fps and C = 200 ms
    samples = [Sample(b"\0\0\0\1x", 512, sync=False) for _ in units]
    whole = fragment(2, 1, 6 * 512, samples)
    assert chunk_defect(whole, units, 512, first_of_segment=False) is None
    assert chunk_defect(fragment(2, 1, 6 * 512, samples[:4]), units, 512, False) == (
        "4 access units, 6 due"
    )
    assert chunk_defect(fragment(2, 1, 7 * 512, samples), units, 512, False) == (
        "tfdt 3584, 3072 due"
    )
    assert chunk_defect(whole[:-3], units, 512, False) is not None  # truncated
    assert chunk_defect(whole, units, 512, first_of_segment=True) == "styp missing"
    assert chunk_defect(styp() + whole, units, 512, True) == (
        "segment does not start with a sync sample"
    )


def test_restart_backoff_doubles_up_to_its_cap_and_forgets_after_a_steady_run() -> None:
    backoff = Backoff(first_s=1.0, cap_s=5.0, steady_s=60.0)
    assert [backoff.delay(ran_s=2.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(ran_s=61.0) == 1.0


@contextlib.contextmanager
def tended(stack: Stack, died: list[str]) -> Iterator[Stack]:
    """The supervisor's loop in a thread: restarts what dies, notes what may not be."""
    stop = threading.Event()

    def tend() -> None:
        while not stop.wait(0.05):
            if dead := stack.tend():
                died.append(dead)

    thread = threading.Thread(target=tend, daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        stop.set()
        thread.join()
        stack.stop()


async def first_epoch(store: ChannelStore) -> Epoch:
    async for _event in store.events(after="0-0", block_ms=60_000):
        epoch = await store.current_epoch()
        assert epoch is not None
        return epoch
    raise AssertionError("no chunk")


async def fetch_segment(http: aiohttp.ClientSession, url: str, retries: list[str]) -> bytes:
    """A segment as a client gets it: a cut response is retried, as players do."""
    for _attempt in range(4):
        try:
            async with http.get(url) as response:
                if response.status == 503:
                    retries.append(f"{url}: 503")
                    continue
                assert response.status == 200, (url, response.status)
                return await response.read()
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            retries.append(f"{url}: cut")
    raise AssertionError(f"{url}: no whole answer in four tries")


async def test_a_killed_pipeline_is_restarted_into_the_epoch_and_no_client_sees_it(
    redis: aioredis.Redis, redis_url: str, server: TestServer, http: aiohttp.ClientSession
) -> None:
    config: ChannelConfig = small_config("failover")
    await put_channel_config(redis, config)
    store = ChannelStore(redis, config.name)
    died: list[str] = []
    stack = Stack(Backoff(first_s=0.5, cap_s=2.0))
    for name in PIPELINES:
        args = ["channel", config.name, "--pipeline", name]
        stack.start(ProcessSpec(name, args, None, {"REDIS_URL": redis_url}, restart=True))
    with tended(stack, died):
        epoch = await first_epoch(store)
        init = await store.init_segment(epoch.id, "v360")
        assert init is not None
        pipeline_a = stack.children[0][1]
        start = (await store.position(epoch.id, "v360") or Position(0, 0, False)).segment + 1
        base = f"/live/{config.name}/{epoch.id}/v360"
        rep = epoch.representation("v360")
        assert rep is not None
        timescale = rep.timescale
        retries: list[str] = []
        killed_in = start + 2
        cpu = {name: cpu_seconds(proc.pid) for name, proc in stack.children}
        began = time.monotonic()
        rejoined_at: int | None = None
        frames: dict[int, int] = {}
        n = start
        while rejoined_at is None or n <= rejoined_at + 1:
            assert n < start + 15, "pipeline a did not rejoin the epoch"
            request = asyncio.create_task(
                fetch_segment(http, str(server.make_url(f"{base}/{n}.m4s")), retries)
            )
            if n == killed_in:
                window_s = time.monotonic() - began
                cpu = {
                    name: (cpu_seconds(p.pid) - cpu[name]) / window_s for name, p in stack.children
                }
                await until_served(store, epoch.id, n, chunk=2)
                kill(pipeline_a, signal.SIGKILL)  # mid-segment, while the client reads it
            media = await request
            assert read_tfdt(media) == n * config.segment_ms * timescale // 1000
            frames[n] = decoded_frames(init, media, "video")
            assert frames[n] > 0, n  # every segment the client gets decodes
            own = await redis.hget(store.keys.pipeline("a").position(epoch.id), "v360")
            joined = Position.decode(own).segment if own is not None else -1
            if n > killed_in and rejoined_at is None and joined > killed_in:
                rejoined_at = joined
            n += 1
        assert died == []
        # whole wherever either pipeline made it whole (on a loaded machine both encoders
        # may fall behind at once and skip frames: that copy is served, shorter but playable)
        defects = {p: await defective_segments(store, p, epoch.id) for p in PIPELINES}
        for number, count in frames.items():
            # a restarted pipeline has no copy of the segments before the one it rejoined at
            whole = [p for p in PIPELINES if await has_whole(store, p, epoch.id, number)]
            if any(("v360", number) not in defects[p] for p in whole):
                assert count == 30, number
        assert stack.children[0][1] is not pipeline_a  # restarted
        current = await store.current_epoch()
        assert current is not None and current.id == epoch.id  # no new epoch, no new URLs
        assert await redis.exists(store.keys.alive("a"))
    print(f"pipeline CPU (cores) before the kill: {cpu}; client retries: {retries}")


async def has_whole(store: ChannelStore, pipeline: str, epoch: str, segment: int) -> bool:
    """Whether ``pipeline`` made segment ``segment`` of v360 whole (its own copy)."""
    raw = await store.redis.hget(store.keys.pipeline(pipeline).position(epoch), "v360")
    made = await own_chunks(store, pipeline, epoch, "v360", segment)
    return bool(made) and raw is not None and Position.decode(raw).has_complete(segment)


async def until_served(store: ChannelStore, epoch: str, segment: int, chunk: int) -> None:
    """Return once the served copy of ``segment`` of v360 has ``chunk``."""
    async for event in store.events(after="0-0", block_ms=10_000):
        if (
            event.epoch == epoch
            and event.rep == "v360"
            and (event.segment, event.chunk)
            >= (
                segment,
                chunk,
            )
        ):
            return


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


async def two_pipelines(redis: aioredis.Redis) -> tuple[ChannelStore, PipelineStore, PipelineStore]:
    """Pipelines a and b of a synthetic channel (ORIGIN_CONFIG's) on its epoch ``e1``, begun
    now; they publish :func:`publish_synthetic` chunks."""
    config = ORIGIN_CONFIG
    await put_channel_config(redis, config)
    store = ChannelStore(redis, config.name)
    a, b = PipelineStore(store, "a"), PipelineStore(store, "b")
    epoch = Epoch("e1", clock.now_ms(), (VIDEO,))
    assert await a.claim_epoch(epoch, {"v1": b"init"}, config.window_s) == epoch
    assert await b.claim_epoch(Epoch("e2", 0, (VIDEO,)), {"v1": b"init"}, 30) == epoch
    return store, a, b


async def publish_synthetic(
    pipeline: PipelineStore, k: int, defect: str | None = None, encode: str | None = None
) -> None:
    """Chunk ``k`` of segment 0 of v1 in ``e1``: bytes naming the pipeline (two encodes), or
    naming ``encode`` (one encode that both pipelines made)."""
    config = ORIGIN_CONFIG
    epoch = await pipeline.store.find_epoch("e1")
    assert epoch is not None
    chunk = Chunk(0, k, chunk_bytes(encode or pipeline.name, 0, k), last=k == CHUNKS - 1)
    await pipeline.publish_chunk(epoch, "v1", chunk, defect, config.timeline, config.window_s)


async def test_a_replaced_segment_cuts_its_readers_who_then_get_the_other_copy_whole(
    redis: aioredis.Redis, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """Two encodes that differ (a restarted pipeline's): no switch mid-segment, a cut."""
    config = ORIGIN_CONFIG
    store, a, b = await two_pipelines(redis)
    publish = publish_synthetic
    for k in range(3):
        await publish(a, k)
    url = str(server.make_url(f"/live/{config.name}/e1/v1/0.m4s"))
    async with http.get(url) as response:
        assert response.status == 200
        first = await response.content.readexactly(3 * len(chunk_bytes("a", 0, 0)))
        assert first == b"".join(chunk_bytes("a", 0, k) for k in range(3))
        for k in range(3):
            await publish(b, k)
        await publish(a, 3, defect="4 access units, 6 due")  # a's copy is no longer usable
        for k in range(3, CHUNKS):
            await publish(b, k)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # cut, never ended: no cache keeps a spliced segment
    assert await store.generation("e1", "v1", 0) == 1
    async with http.get(url) as again:
        assert await again.read() == b"".join(chunk_bytes("b", 0, k) for k in range(CHUNKS))


@pytest.mark.parametrize("same_bytes", [True, False])
async def test_a_copy_further_ahead_takes_over_from_a_live_owner_only_with_the_same_bytes(
    redis: aioredis.Redis, same_bytes: bool
) -> None:
    """The owner stops mid-segment while its alive key still lives. The peer's copy, further
    ahead, is served from its next chunk on where its chunks so far are the served bytes
    (no reader can tell), under the same generation; a different encode would replace the
    segment and cut every reader, so it waits for the owner to be gone."""
    store, a, b = await two_pipelines(redis)
    encode = "same" if same_bytes else None
    for k in range(3):
        await publish_synthetic(a, k, encode=encode)
    await redis.pexpire(store.keys.alive("a"), 60_000)  # a looks alive for a minute
    for k in range(CHUNKS - 1):  # all but the last: the segment stays open
        await publish_synthetic(b, k, encode=encode)
    served, position = await store.chunks("e1", "v1", 0)
    made, owner = (CHUNKS - 1, b"b:0") if same_bytes else (3, b"a:0")
    assert served == [chunk_bytes(encode or "a", 0, k) for k in range(made)]
    assert position == Position(0, made - 1, False)
    assert await redis.hget(store.keys.owners("e1"), "v1:0") == owner


async def test_a_segment_left_before_its_last_chunk_is_defective_and_not_served(
    redis: aioredis.Redis,
) -> None:
    """A late encoder skipped segment 0's last chunks: each chunk a made is sound, but its
    copy is short. Beginning segment 1 shows it; b's copy replaces it and is served whole."""
    store, a, b = await two_pipelines(redis)
    for k in range(3):
        if k < 2:
            await publish_synthetic(a, k)
        await publish_synthetic(b, k)
    epoch = await store.find_epoch("e1")
    assert epoch is not None
    timeline = ORIGIN_CONFIG.timeline
    next_one = Chunk(1, 0, chunk_bytes("a", 1, 0), last=False)
    await a.publish_chunk(epoch, "v1", next_one, None, timeline, ORIGIN_CONFIG.window_s)
    reason = await redis.hget(store.keys.pipeline("a").defects("e1"), "v1:0")
    assert reason is not None and _text(reason).startswith("ends after chunk 1")
    for k in range(3, CHUNKS):
        await publish_synthetic(b, k)
    served, position = await store.chunks("e1", "v1", 0)
    assert served == [chunk_bytes("b", 0, k) for k in range(CHUNKS)]
    assert position is not None and position.has_complete(0)
    assert await store.generation("e1", "v1", 0) == 1  # a's two chunks were replaced


async def test_a_pipeline_joins_a_running_epoch_but_not_one_past_its_window(
    redis: aioredis.Redis,
) -> None:
    store = ChannelStore(redis, "claims")
    a, b = PipelineStore(store, "a"), PipelineStore(store, "b")
    running = Epoch("e1", 1_000, (VIDEO,))
    assert await a.claim_epoch(running, {"v1": b"init"}, 30) == running
    assert await b.claim_epoch(Epoch("e2", 2_000, (VIDEO,)), {"v1": b"init"}, 30) == running
    await redis.delete(store.keys.epochs)  # its window passed with nothing published
    fresh = Epoch("e3", 3_000, (VIDEO,))
    assert await b.claim_epoch(fresh, {"v1": b"init"}, 30) == fresh
    assert await store.find_epoch("e3") == fresh


async def test_the_served_copy_is_settled_on_a_redis_cluster() -> None:
    """The script spells the pipelines' keys itself: they share the channel's slot."""
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(contextlib.contextmanager(local_cluster)())
        redis = shared_client(cluster.url)
        try:
            store = ChannelStore(redis, "clustered")
            a, b = PipelineStore(store, "a"), PipelineStore(store, "b")
            epoch = Epoch("e1", 1_000, (VIDEO,))
            await a.claim_epoch(epoch, {"v1": b"init"}, 30)
            await b.claim_epoch(epoch, {"v1": b"init"}, 30)
            timeline = ORIGIN_CONFIG.timeline
            for k in range(CHUNKS):
                chunk = Chunk(0, k, chunk_bytes("x", 0, k), last=k == CHUNKS - 1)
                defect = "unreadable" if k == 2 else None
                await a.publish_chunk(epoch, "v1", chunk, defect, timeline, 30)
                await b.publish_chunk(epoch, "v1", chunk, None, timeline, 30)
            served, position = await store.chunks("e1", "v1", 0)
            assert served == [chunk_bytes("x", 0, k) for k in range(CHUNKS)]
            assert position == Position(0, CHUNKS - 1, True)
            assert await redis.hget(store.keys.owners("e1"), "v1:0") == b"b:0"
        finally:
            await redis.aclose()
