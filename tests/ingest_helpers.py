"""A real ingest process inside a test, and what a viewer would see of its channel."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import math
from collections.abc import AsyncIterator

import av
import numpy as np
import redis.asyncio as aioredis
from aiortc import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from live.ingest.keys import RedisStreamKeys
from live.ingest.server import IngestServer
from live.state import ChannelStore
from livemesh import clock
from tests.live_helpers import small_config

BROADCAST_RGB = (230, 40, 200)  # a magenta no slate has
SLATE_MAX_BRIGHTNESS = 60  # the slate's centre is dark blue-grey


@contextlib.asynccontextmanager
async def ingest_server(
    redis: aioredis.Redis, channel: str, key: str, rtmp: bool = False
) -> AsyncIterator[IngestServer]:
    """An ingest process serving one small channel with stream key ``key``, on loopback."""
    await RedisStreamKeys(redis).issue(channel, key)
    server = IngestServer(
        redis, [small_config(channel)], RedisStreamKeys(redis), rtmp_port=0 if rtmp else None
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def next_segment_centre(store: ChannelStore, rep: str = "v360") -> tuple[int, np.ndarray]:
    """The first segment of ``rep`` wholly captured from now on: its number and centre colour."""
    epoch = await store.current_epoch()
    config = await store.get_config()
    assert epoch is not None and config is not None
    since_ms = clock.now_ms()
    async for event in store.events():
        starts_ms = epoch.start_ms + event.segment * config.segment_ms
        if event.epoch == epoch.id and event.rep == rep and event.last and starts_ms >= since_ms:
            init = await store.init_segment(epoch.id, rep)
            chunks, _ = await store.chunks(epoch.id, rep, event.segment)
            assert init is not None
            with av.open(io.BytesIO(init + b"".join(chunks)), "r") as container:
                frames = list(container.decode(video=0))
            picture = frames[len(frames) // 2].to_ndarray(format="rgb24")
            h, w = picture.shape[:2]
            centre = picture[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
            return event.segment, centre.reshape(-1, 3).mean(axis=0)
    raise AssertionError("the event stream ended")


def is_broadcast(rgb: np.ndarray) -> bool:
    return bool(np.abs(rgb - np.array(BROADCAST_RGB)).max() < 40)


def is_slate(rgb: np.ndarray) -> bool:
    return bool(rgb.max() < SLATE_MAX_BRIGHTNESS)


class ColourTrack(VideoStreamTrack):
    """A broadcaster's camera: a solid magenta picture, 320x180."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        picture = np.empty((180, 320, 3), np.uint8)
        picture[:] = BROADCAST_RGB
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A broadcaster's microphone: a 440 Hz tone, 20 ms frames."""

    async def recv(self) -> av.AudioFrame:
        silence = await super().recv()  # paced by aiortc
        assert isinstance(silence, av.AudioFrame) and silence.pts is not None
        n = silence.samples
        t = (silence.pts + np.arange(n)) / silence.sample_rate
        wave = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        frame.sample_rate, frame.pts = silence.sample_rate, silence.pts
        frame.time_base = fractions.Fraction(1, silence.sample_rate)
        return frame


def broadcaster_tracks() -> list[MediaStreamTrack]:
    return [ColourTrack(), ToneTrack()]


async def wait_threading_event(event: object, timeout_s: float) -> bool:
    """Awaits a ``threading.Event`` without blocking the loop."""
    import threading

    assert isinstance(event, threading.Event)
    return await asyncio.to_thread(event.wait, timeout_s)
