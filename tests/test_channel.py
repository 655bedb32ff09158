"""A real channel: PyAV encoders, our packager, a real Redis."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from kernel import clock
from kernel.epoch import Epoch, Position, Representation
from kernel.isobmff import iter_boxes, read_prft_wallclock_ms
from kernel.redis_server import EmbeddedRedis, redis_client
from live.channel import LiveChannel, synthetic_source
from live.cmaf import read_sample_durations, read_tfdt
from live.source import ChannelSource
from live.state import ChannelStore, ChunkEvent
from tests.live_helpers import running_channel, small_config, wait_for_segments


async def test_segments_align_across_the_ladder_and_decode(redis: aioredis.Redis) -> None:
    config = small_config("align")
    store = ChannelStore(redis, config.name)
    async with running_channel(store, config) as channel:
        assert channel.epoch is not None
        epoch = channel.epoch
        reps = [r.id for r in epoch.representations]
        await wait_for_segments(store, epoch.id, reps, count=3)

    for rep in epoch.representations:
        init = await store.init_segment(epoch.id, rep.id)
        assert init is not None
        for number in range(3):
            chunks, position = await store.chunks(epoch.id, rep.id, number)
            assert position is not None and position.has_complete(number)
            assert 1 <= len(chunks) <= config.timeline.chunks_per_segment
            media = b"".join(chunks)
            duration_s = segment_duration(media) / rep.timescale
            assert next(iter_boxes(media)).type == b"styp"
            start = read_tfdt(media) / rep.timescale
            if rep.kind == "video":
                # every rung's segment n starts with a keyframe at exactly n * D
                assert start == number * config.segment_ms / 1000
                with av.open(io.BytesIO(init + media)) as container:
                    frames = list(container.decode(video=0))
                assert frames[0].key_frame
                # a whole segment, with no hole even where a late encoder skipped frames
                assert duration_s == config.segment_ms / 1000
            else:
                half_frame = 1024 / 48000 / 2 + 1e-9
                assert abs(start - number * config.segment_ms / 1000) <= half_frame
                assert abs(duration_s - config.segment_ms / 1000) <= 2 * half_frame
                with av.open(io.BytesIO(init + media)) as container:
                    assert len(list(container.decode(audio=0))) >= 46


async def test_chunks_are_published_in_real_time_with_their_capture_clock(
    redis: aioredis.Redis,
) -> None:
    config = small_config("pace")
    store = ChannelStore(redis, config.name)
    arrivals: list[tuple[ChunkEvent, int]] = []
    async with running_channel(store, config) as channel:
        assert channel.epoch is not None
        epoch = channel.epoch
        await wait_for_segments(
            store,
            epoch.id,
            ["v360"],
            count=2,
            on_event=lambda e: arrivals.append((e, clock.now_ms())),
        )
    video = [(e, t) for e, t in arrivals if e.rep == "v360" and e.epoch == epoch.id]
    for event, seen_ms in video:
        due_ms = epoch.start_ms + config.timeline.chunk_available_ms(event.segment, event.chunk)
        frame_ms = 1000 // config.frame_rate
        assert seen_ms >= due_ms - frame_ms, "a chunk cannot exist before its media was captured"
    for number in range(2):
        chunks, _ = await store.chunks(epoch.id, "v360", number)
        for chunk in chunks:  # prft: the wall clock at which the chunk's first frame was captured
            media_ms = read_tfdt(chunk) * 1000 // 15360
            assert read_prft_wallclock_ms(chunk) == epoch.start_ms + media_ms


async def test_a_restart_is_a_new_epoch_and_leaves_old_urls_untouched(
    redis: aioredis.Redis,
) -> None:
    config = small_config("restart")
    store = ChannelStore(redis, config.name)
    async with running_channel(store, config) as first:
        assert first.epoch is not None
        await wait_for_segments(store, first.epoch.id, ["v360"], count=1)
    old_bytes, _ = await store.chunks(first.epoch.id, "v360", 0)
    async with running_channel(store, config) as second:
        assert second.epoch is not None
        await wait_for_segments(store, second.epoch.id, ["v360"], count=1)
    assert second.epoch.id != first.epoch.id
    assert (await store.current_epoch()) is None  # off air after the stop
    assert await store.find_epoch(first.epoch.id) == first.epoch
    again, _ = await store.chunks(first.epoch.id, "v360", 0)
    assert again == old_bytes


def segment_duration(media: bytes) -> int:
    """Sum of the sample durations of every fragment in a segment, in its timescale."""
    moofs = [box.start for box in iter_boxes(media) if box.type == b"moof"]
    return sum(sum(read_sample_durations(media, start)) for start in moofs)


class SlowSource:
    """The synthetic source on a machine too slow for real time: each picture costs 60 ms."""

    def __init__(self, inner: ChannelSource) -> None:
        self.inner = inner

    def video_frame(self, index: int, captured_ms: int) -> av.VideoFrame:
        time.sleep(0.06)  # simulated CPU cost, not synchronisation
        return self.inner.video_frame(index, captured_ms)

    def audio_frame(self, index: int) -> av.AudioFrame:
        return self.inner.audio_frame(index)


async def test_an_encoder_behind_real_time_is_reported_and_keeps_the_timeline(
    redis: aioredis.Redis,
) -> None:
    config = small_config("slow")
    store = ChannelStore(redis, config.name)
    channel = LiveChannel(config, store, SlowSource(synthetic_source(config)))
    task = asyncio.create_task(channel.run())
    await channel.started.wait()
    assert channel.epoch is not None
    epoch = channel.epoch
    await wait_for_segments(store, epoch.id, ["v360"], count=3)
    channel.stop()
    await task

    late = REGISTRY.get_sample_value("livemesh_encoder_late_frames_total", {"channel": "slow"})
    assert late is not None and late > 0
    init = await store.init_segment(epoch.id, "v360")
    assert init is not None
    for number in range(3):
        chunks, _ = await store.chunks(epoch.id, "v360", number)
        media = b"".join(chunks)
        assert read_tfdt(media) == number * config.segment_ms * 15360 // 1000
        with av.open(io.BytesIO(init + media)) as container:
            frames = list(container.decode(video=0))
        # frames were skipped, yet every segment still starts on time with a keyframe
        assert frames[0].key_frame
        assert len(frames) < config.segment_ms * config.frame_rate // 1000


async def test_the_channel_rides_out_a_redis_restart() -> None:
    """Redis restarts empty mid-run: the channel keeps its epoch and publishes again."""
    with EmbeddedRedis() as server:
        redis = redis_client(server.url)
        config = small_config("survivor")
        store = ChannelStore(redis, config.name)
        async with running_channel(store, config) as channel:
            assert channel.epoch is not None
            epoch = channel.epoch
            await wait_for_segments(store, epoch.id, ["v360"], count=1)
            await asyncio.to_thread(server.restart)  # everything in Redis is gone
            await redis.connection_pool.disconnect()
            await wait_for_segments(store, epoch.id, ["v360"], count=1)  # chunks flow again
            assert await store.current_epoch() == epoch  # announced anew, same URLs
            assert await store.init_segment(epoch.id, "v360") is not None
        await redis.aclose()


async def test_what_the_channel_made_while_redis_was_down_is_published_when_it_is_back() -> None:
    """Redis is killed for four seconds (more than the queue to the publisher holds): the
    chunks made meanwhile are kept and published once it answers again, so the timeline
    has no hole where the outage was."""
    with EmbeddedRedis() as server:
        redis = redis_client(server.url)
        config = small_config("keeper")
        store = ChannelStore(redis, config.name)
        async with running_channel(store, config) as channel:
            assert channel.epoch is not None
            epoch = channel.epoch
            await wait_for_segments(store, epoch.id, ["v360"], count=1)
            before = await store.position(epoch.id, "v360")
            server.kill()
            await asyncio.sleep(4.0)  # the outage itself: four segments' worth of media
            await asyncio.to_thread(server.restart)
            assert before is not None
            # (the append-only file is synced every second: the last second before the kill
            # may be lost with the server; what the channel made after the kill may not)
            made_in_the_outage = range(before.segment + 2, before.segment + 5)
            await wait_for_segments(store, epoch.id, ["v360"], count=made_in_the_outage[-1] + 1)
            for segment in made_in_the_outage:
                # there, from its start (an encoder behind real time may skip frames, so
                # the number of chunks is not held to)
                stored, _ = await store.chunks(epoch.id, "v360", segment)
                assert stored and stored[0][4:8] == b"styp", segment
        await redis.aclose()


class BrokenStore(ChannelStore):
    """A real store whose third chunk hits an unexpected bug."""

    published = 0

    async def publish_chunk(self, *args: Any, **kwargs: Any) -> bool:
        self.published += 1
        if self.published == 3:
            raise ValueError("unexpected")
        return await super().publish_chunk(*args, **kwargs)


async def test_a_publisher_failure_stops_the_channel_instead_of_hanging_it(
    redis: aioredis.Redis,
) -> None:
    config = small_config("broken")
    channel = LiveChannel(config, BrokenStore(redis, config.name))
    with pytest.raises(ValueError, match="unexpected"):
        await asyncio.wait_for(channel.run(), timeout=60)  # bounded: a hang fails the test


async def test_a_chunk_published_twice_is_stored_and_announced_once(
    redis: aioredis.Redis,
) -> None:
    """A client retries a publish whose reply was lost: the chunk stays where it was, once."""
    store = ChannelStore(redis, "retried")
    epoch = Epoch("1000", clock.now_ms(), (Representation("v", "video", "avc1.64001f", 1, 15360),))
    await store.start_epoch(epoch, {"v": b"init"}, window_s=60)
    for chunk, data in ((0, b"first"), (0, b"first"), (1, b"second"), (1, b"second")):
        assert await store.publish_chunk(epoch, "v", 0, chunk, data, chunk == 1, 60)
    stored, position = await store.chunks(epoch.id, "v", 0)
    assert stored == [b"first", b"second"]
    assert position == Position(0, 1, True)
    assert await redis.xlen(store.keys.events) == 2
