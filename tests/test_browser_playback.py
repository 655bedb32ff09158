"""Real players in headless Chromium play the live channel through edge+shield: dash.js 5.2.1
and Shaka Player 5.2.12 the LL-DASH MPD, hls.js 1.7.4 the LL-HLS playlists of the same chunks.

The stack is real processes on loopback (Redis, origin, a live channel, a shield on the
origin, an edge with tokens on the shield); the page is served from another port, so
every manifest, segment and time request is cross-origin.  Set-up: ``make browser-deps``.

Everything waits on events the page reports (``playing``, ``currentTime``, latency
samples) through ``page.wait_for_function``; the timeouts are only upper bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from kernel.channel_config import DEFAULT_VIDEO_LADDER
from player.harness import chromium_page, live_stack, missing_setup, page_url, serve_player

pytestmark = pytest.mark.timeout(120)

# A functional bound, not the performance target (bench/latency.py measures that): a
# player that is not in low-latency mode sits 3-4 segments (6-8 s) behind.
LATENCY_BOUND_S = 3.0
SETTLED_SAMPLES = 8  # the page samples at 4 Hz: two seconds in a row below the bound
RUNGS = {(rung.width, rung.height) for rung in DEFAULT_VIDEO_LADDER}

STATE = """() => {
  const lm = window.livemesh;
  return {state: {...lm.state, samples: lm.state.samples.slice(-12)},
          snapshot: lm.snapshot(), tracks: lm.tracks(), stalls: lm.stalls()};
}"""


def _play_until_settled(page: Any, report: Callable[[], str]) -> dict[str, Any]:
    """Wait for playback, three seconds of media, then a settled latency; the page's state."""
    try:
        page.wait_for_function("() => window.livemesh.state.playing", timeout=30_000)
        started = page.evaluate("() => document.getElementById('video').currentTime")
        # Media time moves on: three seconds of it, whatever the wall clock does.
        page.wait_for_function(
            "t => document.getElementById('video').currentTime > t + 3",
            arg=started,
            timeout=20_000,
        )
        page.wait_for_function(
            """([n, bound]) => {
              const s = window.livemesh.state.samples.slice(-n);
              return s.length === n && s.every(x => x.latency !== null && x.latency < bound);
            }""",
            arg=[SETTLED_SAMPLES, LATENCY_BOUND_S],
            timeout=20_000,
        )
    except Exception as error:
        raise AssertionError(f"{error}\n{report()}") from error
    state: dict[str, Any] = page.evaluate(STATE)
    return state


def _reporter(page: Any, log: Any, stack: Any) -> Callable[[], str]:
    def report() -> str:
        state: dict[str, Any] = page.evaluate(STATE)
        return f"{state}\n{log.text()}\ndead: {stack.dead()}\n{stack.log_tail()}"

    return report


def _stream_requests(log: Any, stack: Any, suffixes: tuple[str, ...]) -> list[str]:
    """The stream's requests: all through the edge, under the token (relative URLs kept it)."""
    stream = [url for url in log.requests if urlsplit(url).path.endswith(suffixes)]
    assert stream and all(url.startswith(f"{stack.edge}/t/") for url in stream), stream
    return stream


def test_hlsjs_plays_ll_hls_of_the_same_chunks_through_edge_and_shield() -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with live_stack("browser") as stack, serve_player() as player, chromium_page() as (page, log):
        report = _reporter(page, log, stack)
        page.goto(page_url(player, stack.signed_playlist(), player="hlsjs"))
        state = _play_until_settled(page, report)
        snapshot = state["snapshot"]
        assert state["state"]["errors"] == [], report()
        assert state["state"]["lowLatency"] is True, report()  # parts seen, LL mode on
        assert (snapshot["width"], snapshot["height"]) in RUNGS, report()
        assert 0 < snapshot["latency"] < LATENCY_BOUND_S, report()
        assert not stack.dead(), report()
        stream = _stream_requests(log, stack, (".m3u8", ".m4s", ".mp4"))
        # Blocking reloads, and media from the very segment objects the MPD names.
        assert any("_HLS_msn=" in url and "_HLS_part=" in url for url in stream), stream
        assert any(urlsplit(url).path.endswith(".m4s") for url in stream), stream


def test_shaka_plays_the_live_channel_through_edge_and_shield() -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with live_stack("browser") as stack, serve_player() as player, chromium_page() as (page, log):
        report = _reporter(page, log, stack)
        page.goto(page_url(player, stack.signed_mpd(), player="shaka"))
        state = _play_until_settled(page, report)
        assert state["state"]["errors"] == [], report()
        assert state["state"]["lowLatency"] is True, report()
        assert 0 < state["snapshot"]["latency"] < LATENCY_BOUND_S, report()
        assert not stack.dead(), report()
        stream = _stream_requests(log, stack, (".mpd", ".m4s"))
        assert any(urlsplit(url).path.endswith(".m4s") for url in stream)


def test_dashjs_plays_the_live_channel_through_edge_and_shield_at_low_latency() -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with live_stack("browser") as stack, serve_player() as player, chromium_page() as (page, log):
        mpd = stack.signed_mpd()
        assert player.split("/")[2] != mpd.split("/")[2]  # page and edge: different origins

        def report() -> str:
            state: dict[str, Any] = page.evaluate(STATE)
            dead = stack.dead()
            return f"{state}\n{log.text()}\ndead: {dead}\n{stack.log_tail()}"

        page.goto(page_url(player, mpd))  # target latency: the MPD's ServiceDescription
        state = _play_until_settled(page, report)
        snapshot = state["snapshot"]
        assert state["state"]["errors"] == [], report()
        assert state["state"]["lowLatency"] is True, report()  # from the MPD, not forced
        assert (snapshot["width"], snapshot["height"]) in RUNGS, report()
        assert 0 < snapshot["latency"] < LATENCY_BOUND_S, report()
        assert not stack.dead(), report()

        # Everything the player fetched for the stream came through the edge, under the
        # token (relative segment URLs kept it), and its clock came from the edge's /time.
        media = (".mpd", ".m4s", ".mp4")
        stream = [url for url in log.requests if urlsplit(url).path.endswith(media)]
        assert stream and all(url.startswith(f"{stack.edge}/t/") for url in stream), stream
        # (a request's query may carry CMCD: dash.js reports in query mode)
        assert any(urlsplit(url).path.endswith(".m4s") for url in stream)
        assert f"{stack.edge}/time" in {url.split("?")[0] for url in log.requests}, log.requests
