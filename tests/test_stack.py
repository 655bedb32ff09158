"""``make demo``'s process tree: it announces the viewer app first, then the MPD, serves
them, and stops cleanly; its origin offers DVR from the archive."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from lxml import etree

from kernel.objectstore import LocalStore
from kernel.procfs import alive, descendants
from live.archive_title import event_title, segment_object
from live.state import ChannelStore
from tests.stack_helpers import demo_stack, process_env, stack_process

DEMO_DVR_S = 3600  # the origin's --dvr-s in deploy/local.toml
ARCHIVE_WAIT_S = 60


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_announces_a_playable_mpd_and_stops_without_leftovers(stop_signal: int) -> None:
    with demo_stack() as stack:
        with urllib.request.urlopen(stack.mpd_url, timeout=10) as response:
            assert response.status == 200
            assert b'type="dynamic"' in response.read()
        assert next(iter(stack.announced)) == "app"  # what a person opens, printed first
        with urllib.request.urlopen(stack.announced["app"], timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/html")
        children = descendants(stack.process.pid)
        assert len(children) >= 3  # redis-server, origin, channel at least
        stack.process.send_signal(stop_signal)
        assert stack.process.wait(timeout=30) == 0
    assert not [pid for pid in children if alive(pid)]


async def test_the_demo_offers_an_hour_of_dvr_served_from_the_archive(tmp_path: Path) -> None:
    """The demo's live MPD offers the origin's DVR depth, and a segment Redis no longer has
    is served from what archive-demo copied into the VOD store (its own directory here).

    Redis's 60 s window is not waited out: once the archive has segment 0 of a rendition
    (looked for at each of the channel's segment ends), its Redis key is deleted, as its
    TTL would; the wait is on the channel's chunk events, the timeout a bound."""
    env = {**os.environ, "LIVEMESH_VOD_STORE": str(tmp_path)}
    with demo_stack(("mpd", "origin"), env=env) as stack:
        with urllib.request.urlopen(stack.announced["origin"], timeout=10) as response:
            mpd = etree.fromstring(response.read())
        assert mpd.get("timeShiftBufferDepth") == f"PT{DEMO_DVR_S}S"
        origin, _ = stack_process(stack.process.pid, "origin")
        redis = aioredis.from_url(process_env(origin)["REDIS_URL"])
        store = LocalStore(tmp_path)
        try:
            live = ChannelStore(redis, "demo")
            epoch = await live.current_epoch()
            assert epoch is not None
            rep = epoch.representations[0].id
            archived = segment_object(event_title("demo", epoch.id), rep, 0)
            await asyncio.wait_for(archive_has(live, store, archived), ARCHIVE_WAIT_S)
            await redis.delete(live.keys.segment(epoch.id, rep, 0))
            url = stack.announced["origin"].replace("manifest.mpd", f"{epoch.id}/{rep}/0.m4s")
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                assert response.read() == await store.get(archived)
        finally:
            await redis.aclose()
            await store.close()


async def archive_has(live: ChannelStore, store: LocalStore, name: str) -> None:
    """Return once ``name`` is in the store, looking at each segment end of the channel."""
    async for event in live.events(after="0-0"):
        if event.last and await store.size(name) is not None:
            return
