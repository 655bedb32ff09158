"""dash.js plays on through a redundant pipeline killed mid-segment (issue 18).

The channel runs as two epoch-locked pipelines (real ``livemesh channel --pipeline``
processes) behind a real origin, shield and edge; dash.js in headless Chromium plays its
LL-DASH MPD at the MPD's low-latency target (three chunks; it keeps about a second of
buffer). Once the served copy of the segment being made has a few chunks, the pipeline
serving it is SIGKILLed and started again, as the supervisor does. The other pipeline
made the same bytes, so its copy carries the segment on at once: the player must report
no error and, where the survivor kept real time, not stall, and the segment must never
have been replaced (a replaced one cuts the player's request). The hand-over's cost in
milliseconds is bench/pipeline_kill.py's to measure. The page's stall log and the video's
``currentTime`` say what the viewer saw. Set-up: ``make browser-deps``.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from kernel.channel_config import AudioRung, ChannelConfig, VideoRung
from kernel.keys import ChannelKeys
from kernel.redis_server import EmbeddedRedis
from live.pipelines import PIPELINES
from player.harness import chromium_page, live_stack, missing_setup, page_url, serve_player
from tests.test_browser_failover import play_on

pytestmark = pytest.mark.timeout(180)

# one small rung beside audio: two pipelines and Chromium share the machine
CONFIG = ChannelConfig(
    "redundant", video=(VideoRung("v360", 640, 360, 600_000),), audio=AudioRung("a64", 64_000)
)
PLAY_BEFORE_KILL_S = 6
PLAY_AFTER_KILL_S = 10
KILL_AFTER_CHUNKS = 3  # of the segment being made: mid-segment, while the player reads it

STATE = """() => ({state: window.livemesh.state, stalls: window.livemesh.stalls(),
                   time: document.getElementById('video').currentTime})"""


def serving_mid_segment(redis: Redis, keys: ChannelKeys) -> tuple[str, str, int]:
    """Once the served copy of the segment being made has ``KILL_AFTER_CHUNKS`` chunks and
    no more: the pipeline serving it, the epoch and the segment. (Playwright's sync API holds this
    thread's event loop: a blocking client reads the chunk events.)"""
    cursor = "$"
    for _ in range(100):  # a read blocks for at most 10 s: the channel stopped
        for _stream, entries in redis.xread({keys.events: cursor}, block=10_000) or []:
            for entry_id, fields in entries:
                cursor = entry_id
                if fields[b"r"] == b"v360" and int(fields[b"k"]) == KILL_AFTER_CHUNKS - 1:
                    epoch, segment = fields[b"e"].decode(), int(fields[b"n"])
                    return served_copy(redis, keys, epoch, segment)[0], epoch, segment
    raise AssertionError("the channel stopped publishing")


def served_copy(redis: Redis, keys: ChannelKeys, epoch: str, segment: int) -> tuple[str, int]:
    """Whose copy of ``segment`` (v360) is served now, and its generation."""
    raw = redis.hget(keys.owners(epoch), f"v360:{segment}")
    assert raw is not None
    owner, generation = raw.decode().split(":")
    return owner, int(generation)


def fell_behind(redis: Redis, defects: str, since: int) -> list[str]:
    """The defects a pipeline recorded (``defects``, its hash) from segment ``since`` on."""
    fields = [f.decode() for f in redis.hkeys(defects)]
    return [f for f in fields if int(f.split(":")[1]) >= since]


def test_dashjs_plays_through_a_pipeline_killed_mid_segment() -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with (
        EmbeddedRedis() as redis,
        live_stack(CONFIG.name, redis_url=redis.url, config=CONFIG, pipelines=PIPELINES) as stack,
        serve_player() as player,
        chromium_page() as (page, log),
    ):

        def report() -> str:
            state: dict[str, Any] = page.evaluate(STATE)
            return f"{state}\n{log.text()}\ndead: {stack.dead()}\n{stack.log_tail()}"

        page.goto(page_url(player, stack.signed_mpd()))  # the MPD's latency target
        try:
            page.wait_for_function("() => window.livemesh.state.playing", timeout=30_000)
        except Exception as error:
            raise AssertionError(f"{error}\n{report()}") from error
        play_on(page, PLAY_BEFORE_KILL_S, 10, f"did not play {PLAY_BEFORE_KILL_S} s", report)
        before = page.evaluate(STATE)
        assert before["state"]["errors"] == [], report()

        client, keys = Redis.from_url(redis.url), ChannelKeys(CONFIG.name)
        victim, epoch, segment = serving_mid_segment(client, keys)
        stack.crash_and_restart(f"pipeline-{victim}")
        play_on(page, PLAY_AFTER_KILL_S, 5, "stopped after the kill", report)

        state = page.evaluate(STATE)
        assert state["state"]["errors"] == [], report()
        survivor = next(p for p in PIPELINES if p != victim)
        late = fell_behind(client, keys.pipeline(survivor).defects(epoch), segment)
        print(f"killed {victim} in segment {segment}; survivor's defects from it on: {late}")
        if not late:
            # the survivor kept real time (on a starved machine both encoders skip frames,
            # and a player stalls without any kill): the kill alone stalls nobody, and the
            # survivor's identical copy carried the killed segment on, never replaced
            assert state["stalls"][len(before["stalls"]) :] == [], report()
            assert served_copy(client, keys, epoch, segment) == (survivor, 0), report()
        assert not stack.dead(), report()
