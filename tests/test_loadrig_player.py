"""The virtual player's clock sync against real HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from livemesh.stack import free_port
from loadrig.player import Player, PlayerContext, PlayerRecord
from loadrig.profile import Device, PlayerSettings

AHEAD_S = 30.0  # the test's time source runs this far ahead of the machine's clock
TIMEOUT = aiohttp.ClientTimeout(total=5)


@pytest.fixture
async def time_url() -> AsyncIterator[str]:
    """A ``/time`` source answering as the stack's does (``http-iso``), ``AHEAD_S`` ahead."""

    async def answer(_request: web.Request) -> web.Response:
        ahead = datetime.now(UTC) + timedelta(seconds=AHEAD_S)
        return web.Response(text=ahead.isoformat(timespec="milliseconds").replace("+00:00", "Z"))

    app = web.Application()
    app.router.add_get("/time", answer)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/time"
    await runner.cleanup()


def _player(http: aiohttp.ClientSession) -> Player:
    ctx = PlayerContext("", PlayerSettings(), http, ["-"], [("-", "-")])
    return Player(ctx, PlayerRecord(0, "tv"), Device("tv", 1.0))


async def test_the_clock_follows_the_time_source(time_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        player = _player(http)
        await player._sync_clock([time_url], TIMEOUT)
    assert player.clock_synced
    assert AHEAD_S - 1 < player.offset_s < AHEAD_S + 1
    assert not player.rec.errors


async def test_a_dead_time_source_is_counted_and_the_next_one_asked(time_url: str) -> None:
    # the stack's MPD names every edge's /time: with the first edge killed, later viewers
    # sync with the next, as dash.js does
    async with aiohttp.ClientSession() as http:
        player = _player(http)
        await player._sync_clock([f"http://127.0.0.1:{free_port()}/time", time_url], TIMEOUT)
    assert AHEAD_S - 1 < player.offset_s < AHEAD_S + 1
    assert player.rec.errors == {"time sync: ClientConnectorError": 1}


async def test_with_no_time_source_answering_the_viewer_keeps_its_own_clock() -> None:
    # dash.js falls back to the device clock: a viewer plays on, never fails over or gives up
    async with aiohttp.ClientSession() as http:
        player = _player(http)
        await player._sync_clock([f"http://127.0.0.1:{free_port()}/time"], TIMEOUT)
    assert player.clock_synced
    assert player.offset_s == 0.0
    assert player.rec.errors == {"time sync: ClientConnectorError": 1}
