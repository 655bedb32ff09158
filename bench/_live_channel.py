"""A live channel as the benches watch it through Redis: started, next segment, chunk times.

The channel process gives no start signal of its own, so the benches read its state and
its event stream (whose ids carry Redis's clock) to know when it is live and when each
chunk was stored.  Benches import these through :mod:`_harness`, which puts the
repository on the path first.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from kernel.keys import ChannelKeys
from kernel.redis_server import redis_client


async def wait_live(redis_url: str, channel: str, rep: str, timeout_s: float = 60.0) -> str:
    """The channel's current epoch id, once ``rep`` has published its first chunk."""
    from live.state import ChannelStore

    redis = redis_client(redis_url)
    store = ChannelStore(redis, channel)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            epoch = await store.current_epoch()
            if epoch is not None and await store.position(epoch.id, rep) is not None:
                return epoch.id
            await asyncio.sleep(0.05)  # the channel process gives no other start signal
    finally:
        await redis.aclose()
    raise SystemExit(f"channel {channel} published nothing for {rep} in {timeout_s} s")


async def next_segment(redis_url: str, channel: str, epoch: str, rep: str) -> int:
    """Wait for ``rep`` to start a new segment; the number of the one after it (the next)."""
    from live.state import ChannelStore

    redis = redis_client(redis_url)
    store = ChannelStore(redis, channel)
    try:
        start = await store.position(epoch, rep)
        assert start is not None
        while True:
            now = await store.position(epoch, rep)
            if now is not None and now.segment != start.segment:
                return now.segment + 1
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()


async def stored_at(
    redis_url: str, channel: str, epoch: str, rep: str
) -> dict[tuple[int, int], int]:
    """When Redis stored each chunk of ``rep`` (ms, the server's clock in the event id)."""
    redis = redis_client(redis_url)
    try:
        # (the client does not decode replies: ids and fields are bytes)
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(ChannelKeys(channel).events)
        )
    finally:
        await redis.aclose()
    out = {}
    for entry_id, fields in entries:
        if fields[b"e"].decode() == epoch and fields[b"r"].decode() == rep:
            out[(int(fields[b"n"]), int(fields[b"k"]))] = int(entry_id.split(b"-")[0])
    return out


def chunk_times(stored: dict[tuple[int, int], int]) -> dict[int, list[int]]:
    """Per segment, the storage times of its chunks in the order they were published.

    A reader's i-th ``mdat`` of a segment is the i-th chunk stored (the origin serves a
    segment's list in order); the packager's chunk indices may skip one when the encoder
    fell behind, so the ordinal, not the index, is what matches.
    """
    out: dict[int, list[int]] = {}
    for (n, _k), ms in sorted(stored.items()):
        out.setdefault(n, []).append(ms)
    return out
