"""A real player: dash.js 5.2.1 in headless Chromium plays the live channel through edge+shield.

The stack is real processes on loopback (Redis, origin, a live channel, a shield on the
origin, an edge with tokens on the shield); the page is served from another port, so
every manifest, segment and time request is cross-origin.  Set-up: ``make browser-deps``.

Everything waits on events the page reports (``playing``, ``currentTime``, latency
samples) through ``page.wait_for_function``; the timeouts are only upper bounds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from live.ladder import DEFAULT_VIDEO_LADDER
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

        state = page.evaluate(STATE)
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
        assert any(url.endswith(".m4s") for url in stream)
        assert f"{stack.edge}/time" in {url.split("?")[0] for url in log.requests}, log.requests
