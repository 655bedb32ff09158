"""Players across a Redis outage: what each sees when Redis dies mid-event and comes back.

Used by ``tests/test_redis_restart.py`` (the bounds, asserted) and ``bench/redis_outage.py``
(the figures). The stack is :func:`player.harness.live_stack` on an embedded Redis this
module kills (SIGKILL), keeps down for a while and starts again, from its append-only file
or empty (the file deleted, as a lost disk would). Watching it:

* real players in one headless Chromium, a page each (dash.js and Shaka on the MPD, hls.js
  on the LL-HLS playlists), sampled from Python at :data:`SAMPLE_S`;
* the load rig's own player (:class:`loadrig.virtual_player.VirtualPlayer`) on its own
  event loop in a thread, sampled at the same rate;
* a new viewer pressing play: the edge asked for a freshly signed manifest until it
  answers 200.

Per player, from the samples: the stall that the outage caused, when the playhead moved
again after Redis's return (*resumed*) and when its latency was back within
:data:`LATENCY_MARGIN_S` of what it was before the kill (*at target*). A player never
reloads here; one that needed a reload shows as never resumed.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from player.harness import CHROMIUM, CHROMIUM_ARGS, LiveStack, page_url

SAMPLE_S = 0.25
# before the kill: the steady latency each player holds (its target, as it plays it)
BASELINE_SAMPLES = 8
# back "at target": within this of the steady latency measured before the kill
LATENCY_MARGIN_S = 0.5
RESUMED_RUN = 4  # playing again: a second of play in a row (at SAMPLE_S)
RIG_STARTED_SAMPLES = 12  # the rig's player has played for three seconds (at SAMPLE_S)
BROWSER_PLAYERS = ("dashjs", "shaka", "hlsjs")
RIG_PLAYER = "loadrig"
SETTLE_TIMEOUT_S = 60.0
# every page plays as a page in front would: Chromium suspends media and throttles timers
# of pages it deems hidden, which a second page makes of the first
FOREGROUND_ARGS = [
    "--disable-background-media-suspend",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]

PAGE_PLAYING = """() => {
  const s = window.livemesh ? window.livemesh.state.samples : [];
  return s.length >= 12 && s.slice(-8).every(x => x.latency !== null);
}"""
PAGE_SAMPLE = """() => {
  const lm = window.livemesh;
  const s = lm.snapshot();
  return {position: s.currentTime, latency: s.latency, stalled: s.stalled,
          errors: lm.state.errors.length, seeks: lm.state.seeks.length,
          rate: s.rate, buffer: s.buffer};
}"""


@dataclass
class Sample:
    t: float  # wall clock, seconds
    position: float  # playhead, seconds of media
    latency: float | None
    stalled: bool
    errors: int = 0
    seeks: int = 0
    rate: float = 1.0  # the playback rate: above 1 while catching up with its target
    buffer: float | None = None  # seconds buffered ahead of the playhead


@dataclass
class Resume:
    """One player across one outage; times in seconds from Redis's return."""

    player: str
    latency_before_s: float | None  # steady, before the first outage: its target as it plays
    stall_s: float  # the longest stretch the playhead stood still around the outage
    resumed_after_s: float | None  # None: never moved again in the watch window
    at_target_after_s: float | None  # None: never back within the margin
    latency_after_s: float | None  # at the end of the watch window
    rate_after: float  # the playback rate then (a player catching up plays faster)
    buffer_after_s: float | None  # and its buffer: below a second, hls.js never catches up
    errors: int  # player errors during the outage and after
    seeks: int  # the player's own jumps (a hole skipped, or back to the target)
    gave_up: bool  # the player stopped playing altogether (nothing sampled after the return)

    def figures(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self).items()}


def steady_latency(samples: list[Sample], until: float) -> float | None:
    """The latency ``samples`` held just before ``until`` (their median over the last
    :data:`BASELINE_SAMPLES`); None if the player was not playing."""
    before = [s.latency for s in samples if s.t < until and s.latency is not None]
    return statistics.median(before[-BASELINE_SAMPLES:]) if before else None


def analyse(
    player: str, samples: list[Sample], killed_at: float, back_at: float, target_s: float | None
) -> Resume:
    """What ``player`` saw, from its samples around an outage from ``killed_at`` to
    ``back_at``; ``target_s``: the latency it held when settled, before any outage."""
    latency_before = target_s
    if not samples or latency_before is None:  # it never played
        return Resume(player, None, 0.0, None, None, None, 1.0, None, 0, 0, gave_up=True)
    after = [s for s in samples if s.t >= back_at]
    resumed = _resumed(samples, back_at)
    at_target = next(
        (
            s.t - back_at
            for s in after
            if resumed is not None
            and s.t - back_at >= resumed
            and s.latency is not None
            and s.latency <= latency_before + LATENCY_MARGIN_S
        ),
        None,
    )
    last = samples[-1]
    first = next((s for s in samples if s.t >= killed_at), last)
    return Resume(
        player=player,
        latency_before_s=latency_before,
        stall_s=longest_stand_still(samples, killed_at),
        resumed_after_s=resumed,
        at_target_after_s=at_target,
        latency_after_s=last.latency,
        rate_after=last.rate,
        buffer_after_s=last.buffer,
        errors=last.errors - first.errors,
        seeks=last.seeks - first.seeks,
        gave_up=not after,
    )


def _playing(prev: Sample, cur: Sample) -> bool:
    """Whether the playhead played from ``prev`` to ``cur``: moved forward, not stalled,
    and no faster than twice real time (a jump is a seek, not play)."""
    moved = cur.position - prev.position
    return not cur.stalled and 0 < moved <= 2 * (cur.t - prev.t)


def _resumed(samples: list[Sample], back_at: float) -> float | None:
    """Seconds from ``back_at`` to the start of the first run of :data:`RESUMED_RUN`
    sample intervals of play after it (0 if play never stopped)."""
    run_from, run = None, 0
    for prev, cur in itertools.pairwise(samples):
        if cur.t < back_at:
            continue
        if _playing(prev, cur):
            run_from = prev.t if run_from is None else run_from
            run += 1
            if run >= RESUMED_RUN:
                return max(0.0, run_from - back_at)
        else:
            run_from, run = None, 0
    return None


def longest_stand_still(samples: list[Sample], since: float) -> float:
    """The longest stretch since ``since`` over which the playhead did not play."""
    longest, still_from = 0.0, None
    for prev, cur in itertools.pairwise(samples):
        if cur.t < since:
            continue
        if not _playing(prev, cur):
            still_from = prev.t if still_from is None else still_from
            longest = max(longest, cur.t - still_from)
        else:
            still_from = None
    return longest


# -- the watchers ------------------------------------------------------------------------


class BrowserPlayers:
    """One page per player in one headless Chromium (Playwright's sync API: call from the
    thread that made it)."""

    def __init__(
        self,
        browser: Any,
        stack: LiveStack,
        player_url: str,
        players: tuple[str, ...],
        params: dict[str, object],
    ) -> None:
        self.pages: dict[str, Any] = {}
        for name in players:
            src = stack.signed_playlist() if name == "hlsjs" else stack.signed_mpd()
            page = browser.new_context().new_page()
            page.goto(page_url(player_url, src, player=name, **params))
            self.pages[name] = page
        self.samples: dict[str, list[Sample]] = {name: [] for name in self.pages}

    def wait_playing(self) -> None:
        for name, page in self.pages.items():
            try:
                page.wait_for_function(PAGE_PLAYING, timeout=SETTLE_TIMEOUT_S * 1000)
            except Exception as error:
                state = page.evaluate("() => window.livemesh && window.livemesh.state")
                raise RuntimeError(f"{name} did not start playing: {state}") from error

    def sample(self) -> None:
        for name, page in self.pages.items():
            got = page.evaluate(PAGE_SAMPLE)
            self.samples[name].append(Sample(t=time.time(), **got))


class RigPlayer:
    """The load rig's virtual player on its own event loop in a thread, sampled there."""

    def __init__(self, mpd_url: str) -> None:
        self.samples: list[Sample] = []
        self.started = threading.Event()  # set once it has played a few seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(mpd_url),))
        self._thread.start()

    async def _run(self, mpd_url: str) -> None:
        import aiohttp

        from loadrig.player_context import PlayerContext
        from loadrig.player_record import PlayerRecord
        from loadrig.scenario import Device, PlayerSettings
        from loadrig.virtual_player import VirtualPlayer

        async with aiohttp.ClientSession() as http:
            ctx = PlayerContext("", PlayerSettings(), http, ["-"], [("-", "-")])
            viewer = VirtualPlayer(ctx, PlayerRecord(0, "tv"), Device("tv", 1.0))
            task = asyncio.create_task(viewer.run([mpd_url]))
            while not self._stop.is_set() and not task.done():
                viewer.observe()
                buffer = viewer.buffer
                if buffer.playhead is not None and viewer.mpd is not None:
                    live_edge = viewer.live_edge(viewer.now())
                    errors = sum(viewer.rec.errors.values())
                    self.samples.append(
                        Sample(time.time(), buffer.playhead, buffer.latency(live_edge),
                               not buffer.playing, errors)
                    )  # fmt: skip
                    if len(self.samples) >= RIG_STARTED_SAMPLES:
                        self.started.set()
                await asyncio.sleep(SAMPLE_S)
            task.cancel()

    def wait_playing(self) -> None:
        if not self.started.wait(SETTLE_TIMEOUT_S):
            raise RuntimeError(f"the rig's player did not start playing: {self.samples[-3:]}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def press_play_after(url_of: Any, back_at: float, timeout_s: float) -> float | None:
    """Seconds from ``back_at`` until a new viewer's manifest (``url_of()``, signed for a
    new session each time) answers 200 on the edge; None if it never did."""
    deadline = back_at + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url_of(), timeout=2) as resp:
                if resp.status == 200:
                    return time.time() - back_at
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # polling an HTTP answer: no event to wait on
    return None


@dataclass
class Watch:
    browser: BrowserPlayers | None  # None: the rig's player alone
    rig: RigPlayer
    targets: dict[str, float | None] = field(default_factory=dict)  # steady latency, per player

    def sample_for(self, seconds: float) -> None:
        """Sample every player at :data:`SAMPLE_S` for ``seconds`` (the watch window; the
        rig's player samples itself)."""
        end = time.time() + seconds
        while time.time() < end:
            started = time.time()
            if self.browser is not None:
                self.browser.sample()
            time.sleep(max(0.0, SAMPLE_S - (time.time() - started)))

    def all_samples(self) -> dict[str, list[Sample]]:
        pages = self.browser.samples if self.browser is not None else {}
        return {**pages, RIG_PLAYER: self.rig.samples}

    def resumes(self, killed_at: float, back_at: float) -> list[Resume]:
        samples = self.all_samples()
        if not self.targets:  # the first outage: what the players held before any
            self.targets = {name: steady_latency(s, killed_at) for name, s in samples.items()}
        return [
            analyse(name, s, killed_at, back_at, self.targets[name]) for name, s in samples.items()
        ]


@contextmanager
def watching(
    stack: LiveStack, player_url: str, players: tuple[str, ...], **params: object
) -> Iterator[Watch]:
    """``players`` (in Chromium, the page's ``params`` given) and the rig's playing
    ``stack``'s channel; stopped on exit.

    More than one page at a time share the machine's two cores with the stack: run one
    browser player per watch for figures that are the player's, not the machine's."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *FOREGROUND_ARGS], headless=True
        )
        rig = RigPlayer(stack.signed_mpd(session="rig"))
        try:
            pages = BrowserPlayers(browser, stack, player_url, players, params)
            pages.wait_playing()
            rig.wait_playing()
            yield Watch(pages, rig)
        finally:
            rig.stop()
            browser.close()


@contextmanager
def rig_watching(stack: LiveStack) -> Iterator[Watch]:
    """The rig's player alone playing ``stack``'s channel (no browser); stopped on exit."""
    rig = RigPlayer(stack.signed_mpd(session="rig"))
    try:
        rig.wait_playing()
        yield Watch(None, rig)
    finally:
        rig.stop()


@dataclass
class Outage:
    """One outage's figures: each player's resume and a new viewer's press play."""

    empty: bool  # Redis came back empty (its append-only file deleted), else from it
    down_s: float
    resumes: list[Resume]
    press_play_after_s: float | None

    def figures(self) -> dict[str, Any]:
        return {
            "restart": "empty" if self.empty else "aof",
            "down_s": round(self.down_s, 3),
            "press_play_after_s": _round(self.press_play_after_s),
            "players": {r.player: r.figures() for r in self.resumes},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def redis_outage(
    redis: Any, stack: LiveStack, watch: Watch, down_s: float, empty: bool, watch_s: float
) -> Outage:
    """Kill ``redis`` (an :class:`kernel.redis_server.EmbeddedRedis`) mid-stream, keep it
    down ``down_s``, start it again (``empty``: without its data) and watch ``watch_s``."""
    watch.sample_for(2.0)  # the steady state just before
    killed_at = time.time()
    redis.kill()
    watch.sample_for(down_s)  # the outage itself is this long
    redis.restart(empty=empty)
    back_at = time.time()
    pressed: list[float | None] = []
    session = iter(range(1_000_000))
    presser = threading.Thread(
        target=lambda: pressed.append(
            press_play_after(
                lambda: stack.signed_mpd(session=f"new-{next(session)}"), back_at, watch_s
            )
        )
    )
    presser.start()
    watch.sample_for(watch_s)
    presser.join()
    return Outage(empty, back_at - killed_at, watch.resumes(killed_at, back_at), pressed[0])
