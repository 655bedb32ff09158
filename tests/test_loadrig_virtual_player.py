"""The virtual player's clock sync and press-play retries against real HTTP servers on
loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from kernel.ports import free_port
from loadrig import press_play
from loadrig.player_context import PlayerContext
from loadrig.player_record import PlayerRecord
from loadrig.press_play import START_ATTEMPTS, Started
from loadrig.scenario import Device, PlayerSettings
from loadrig.virtual_player import VirtualPlayer

AHEAD_S = 30.0  # the test's time source runs this far ahead of the machine's clock
TIMEOUT = aiohttp.ClientTimeout(total=5)
# a session as the gateway answers press play: in a live-delay experiment's 0.5 s cell
SESSION = {
    "name": "playbackSessions/s1",
    "manifestUrls": [{"url": "http://e/m.mpd"}],
    "targetLatencyMs": 500,
}


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """``app`` served on a free loopback port; its runner (to clean up) and base URL."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def time_url() -> AsyncIterator[str]:
    """A ``/time`` source answering as the stack's does (``http-iso``), ``AHEAD_S`` ahead."""

    async def answer(_request: web.Request) -> web.Response:
        ahead = datetime.now(UTC) + timedelta(seconds=AHEAD_S)
        return web.Response(text=ahead.isoformat(timespec="milliseconds").replace("+00:00", "Z"))

    app = web.Application()
    app.router.add_get("/time", answer)
    runner, base = await _serve(app)
    yield f"{base}/time"
    await runner.cleanup()


def _player(http: aiohttp.ClientSession, gateway: str = "") -> VirtualPlayer:
    ctx = PlayerContext(gateway, PlayerSettings(), http, ["-"], [("-", "-")])
    return VirtualPlayer(ctx, PlayerRecord(0, "tv"), Device("tv", 1.0))


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


async def _gateway(
    answers: list[tuple[int, dict[str, str]]],
    retry_after_ms: int | None = None,
) -> tuple[web.AppRunner, str, list[float]]:
    """A gateway whose StartPlayback gives ``answers`` in turn (the last one from then on),
    its refusals with the error body's ``retryAfterMs`` when given; the times it was asked."""
    asked: list[float] = []

    async def start(_request: web.Request) -> web.Response:
        asked.append(time.monotonic())
        status, headers = answers[min(len(asked), len(answers)) - 1]
        if status != 200:
            error: dict[str, object] = {"message": "overloaded"}
            if retry_after_ms is not None:
                error["retryAfterMs"] = retry_after_ms
            return web.json_response({"error": error}, status=status, headers=headers)
        return web.json_response({"session": SESSION})

    app = web.Application()
    app.router.add_post("/v1/playback:start", start)
    runner, base = await _serve(app)
    return runner, base, asked


async def _press_play(
    answers: list[tuple[int, dict[str, str]]], retry_after_ms: int | None = None
) -> tuple[Started, VirtualPlayer, list[float]]:
    """A viewer pressing play against :func:`_gateway`: what it got, the player, and the
    times the gateway was asked."""
    runner, gateway, asked = await _gateway(answers, retry_after_ms)
    try:
        async with aiohttp.ClientSession() as http:
            player = _player(http, gateway)
            started = await player._start()
    finally:
        await runner.cleanup()
    return started, player, asked


async def test_a_shed_press_play_is_pressed_again_after_its_retry_after() -> None:
    started, player, asked = await _press_play([(503, {"Retry-After": "1"}), (200, {})])
    assert started == Started(["http://e/m.mpd"], "s1", 0.5)
    assert len(asked) == 2 and asked[1] - asked[0] >= 1.0
    assert player.rec.errors == {"start: PlayerError: gateway 503: overloaded": 1}


async def test_a_press_play_comes_back_after_the_gateways_hint_in_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the documented retryAfterMs wins over the whole seconds of Retry-After, and the
    # player's own backoff (made long here) is not added to it: the gateway jittered it
    monkeypatch.setattr(press_play, "START_BACKOFF_S", 30.0)
    started, player, asked = await _press_play([(429, {"Retry-After": "30"}), (200, {})], 50)
    assert started.urls == ["http://e/m.mpd"]
    assert len(asked) == 2 and 0.05 <= asked[1] - asked[0] < 30.0
    assert player.rec.errors == {"start: PlayerError: gateway 429: overloaded": 1}


def test_a_retry_hint_is_read_from_the_body_then_the_header() -> None:
    hinted = {"error": {"message": "overloaded", "retryAfterMs": 1250}}
    assert press_play.retry_after_s(hinted, "2") == 1.25
    assert press_play.retry_after_s({"error": {"message": "x"}}, "2") == 2.0
    assert press_play.retry_after_s({"error": {"retryAfterMs": "soon"}}, "") == 0.0
    assert press_play.retry_after_s("not json", "") == 0.0


def test_startup_parts_add_up_to_the_startup_time() -> None:
    rec = PlayerRecord(0, "tv", joined_at=100.0)
    rec.startup_marks = {"press": 100.4, "mpd": 100.5, "init": 100.55}
    assert rec.startup_parts() == {}  # not started: no breakdown
    rec.startup_s = 0.9
    parts = rec.startup_parts()
    assert parts == pytest.approx({"press": 0.4, "mpd": 0.1, "init": 0.05, "first_segment": 0.35})
    assert sum(parts.values()) == pytest.approx(rec.startup_s)
    rec.mark("press")  # after the start (a failover repeats the steps): not moved
    assert rec.startup_marks["press"] == 100.4


async def test_a_viewer_told_when_to_come_back_keeps_pressing_within_its_patience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # hinted refusals do not use up the presses a viewer gives to unhinted ones: it follows
    # the hints until its patience would run out, then gives up
    monkeypatch.setattr(press_play, "START_PATIENCE_S", 2.0)
    monkeypatch.setattr(press_play, "START_ATTEMPTS", 2)  # (few presses on a busy machine)
    started, player, asked = await _press_play([(429, {})], 10)
    assert started.urls == []
    assert player.rec.errors == {"start: PlayerError: gateway 429: overloaded": len(asked)}
    assert 2 < len(asked) <= 2.0 / 0.01 + 1
    assert asked[-1] - asked[0] <= 2.0


async def test_a_viewer_gives_up_after_its_last_press(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(press_play, "START_BACKOFF_S", 0.001)
    started, player, asked = await _press_play([(429, {})])
    assert started.urls == []
    assert len(asked) == START_ATTEMPTS
    assert player.rec.errors == {"start: PlayerError: gateway 429: overloaded": START_ATTEMPTS}
