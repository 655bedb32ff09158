"""Running a real live channel inside a test, stopped by events rather than sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from kernel.channel_config import AudioRung, ChannelConfig, VideoRung
from kernel.channel_config_store import put_channel_config
from live.channel import LiveChannel
from live.state import ChannelStore, ChunkEvent

SMALL_LADDER = (VideoRung("v360", 640, 360, 600_000), VideoRung("v180", 320, 180, 200_000))


def small_config(name: str = "test", segment_ms: int = 1000) -> ChannelConfig:
    """A two-rung ladder with 1 s segments: real encoding, but light on a 2-core machine."""
    return ChannelConfig(
        name,
        video=SMALL_LADDER,
        audio=AudioRung("a64", 64_000),
        segment_ms=segment_ms,
        chunk_ms=200,
        window_s=30,
    )


@contextlib.asynccontextmanager
async def running_channel(
    store: ChannelStore, config: ChannelConfig, **options: Any
) -> AsyncIterator[LiveChannel]:
    """A channel on air for the body of the ``async with``; stopped and drained after it.

    The channel is created first (its configuration record written, as the channels
    service does), so origins read of it what a real channel has. ``options`` go to
    :class:`LiveChannel` (a redundant pipeline, a test's fault).
    """
    await put_channel_config(store.redis, config)
    channel = LiveChannel(config, store, **options)
    task = asyncio.create_task(channel.run())
    started = asyncio.create_task(channel.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what failed at start
    try:
        yield channel
    finally:
        channel.stop()
        await task


async def wait_for_segments(
    store: ChannelStore,
    epoch_id: str,
    reps: list[str],
    count: int,
    on_event: Callable[[ChunkEvent], None] | None = None,
) -> None:
    """Return once every rendition has completed segments ``0..count-1``."""
    done: set[str] = set()
    async for event in store.events(after="0-0"):
        if on_event:
            on_event(event)
        if event.epoch == epoch_id and event.last and event.segment >= count - 1:
            done.add(event.rep)
            if done >= set(reps):
                return
