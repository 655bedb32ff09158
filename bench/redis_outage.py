"""Benchmark: real players across a Redis crash mid-event (issue 20's 4 s outage target).

Starts an embedded Redis, the origin, a live channel, a shield and an edge with tokens
(``player/harness.py``), then dash.js, Shaka and hls.js in headless Chromium (a page each)
and the load rig's virtual player, all playing the channel (``player/outage.py``). Redis is
then killed (SIGKILL), kept down ``--down`` seconds and started again, first from its
append-only file, then (a second outage) empty, its file deleted.

Per player and outage: the longest stand-still of the playhead, when it moved again after
Redis's return (*resumed*), when its latency was back within 0.5 s of its steady latency
before the kill (*at target*), its errors and own seeks (none reloads: the page never
does), and when a new viewer's freshly signed manifest answered 200 on the edge (press
play). The baseline, from the same run: the longest stand-still of each player over an
equal window with no outage.

Targets (issue 20): every player resumed and at target within 2 s of Redis's return,
press play within 5 s; ``worst_s`` gives each player's latest over every outage.
``--quick``: one outage of each kind, 10 s watched after each.
Run: ``python bench/redis_outage.py [--quick] [--down 4] [--players dashjs,shaka,hlsjs]
[--max-drift S]``. Ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _harness import print_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.redis_server import EmbeddedRedis
from player.harness import live_stack, serve_player
from player.outage import (
    BROWSER_PLAYERS,
    RIG_PLAYER,
    Outage,
    longest_stand_still,
    redis_outage,
    watching,
)

RESUME_TARGET_S = 2.0
PRESS_PLAY_TARGET_S = 5.0


def met(outage: Outage) -> bool:
    resumed = all(
        r.at_target_after_s is not None and r.at_target_after_s <= RESUME_TARGET_S
        for r in outage.resumes
    )
    pressed = outage.press_play_after_s is not None
    return resumed and pressed and outage.press_play_after_s <= PRESS_PLAY_TARGET_S  # type: ignore[operator]


def worst(outages: list[Outage]) -> dict[str, dict[str, float | None]]:
    """Per player (the rig's under ``loadrig``), the latest it played again and the latest
    it was back at its latency, over every outage, in seconds from Redis's return (None:
    once it never did within the watch)."""
    times: dict[str, dict[str, list[float | None]]] = {}
    for outage in outages:
        for r in outage.resumes:
            player = times.setdefault(r.player, {"resumed_after_s": [], "at_target_after_s": []})
            player["resumed_after_s"].append(r.resumed_after_s)
            player["at_target_after_s"].append(r.at_target_after_s)
    return {
        player: {
            what: None if None in values else round(max(v for v in values if v is not None), 3)
            for what, values in figures.items()
        }
        for player, figures in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="watch 10 s after each outage")
    parser.add_argument("--down", type=float, default=4.0, help="seconds Redis stays down")
    parser.add_argument(
        "--players", default=",".join(BROWSER_PLAYERS), help="browser players, comma-separated"
    )
    parser.add_argument(
        "--max-drift",
        type=float,
        help="dash.js's maxDrift (s): past it, the page seeks it back to its target "
        "(default: the MPD's Latency@max - Latency@target)",
    )
    args = parser.parse_args()
    watch_s = 10.0 if args.quick else 30.0
    outages: dict[str, list[Outage]] = {}
    baseline: dict[str, float] = {}
    with EmbeddedRedis() as redis, live_stack("outage", redis_url=redis.url) as stack:
        for name in args.players.split(","):
            params = {"maxDrift": args.max_drift} if args.max_drift else {}
            with (
                serve_player() as player_url,
                watching(stack, player_url, (name,), **params) as watch,
            ):
                since = time.time()
                watch.sample_for(2.0 + args.down + watch_s)  # the baseline: no outage
                for player, samples in watch.all_samples().items():
                    key = f"{player}_with_{name}" if player == RIG_PLAYER else player
                    baseline[key] = round(longest_stand_still(samples, since), 3)
                for empty in (False, True):
                    outage = redis_outage(redis, stack, watch, args.down, empty, watch_s)
                    outages.setdefault(name, []).append(outage)
                    print(outage.figures(), flush=True)
        dead = stack.dead()
    for name, runs in outages.items():
        for outage in runs:
            kind = "empty" if outage.empty else "aof"
            for r in outage.resumes:
                print(
                    f"{kind:5} {r.player:8} stall {r.stall_s:5.2f} s  "
                    f"resumed +{r.resumed_after_s} s  at target +{r.at_target_after_s} s  "
                    f"latency {r.latency_before_s} -> {r.latency_after_s} s  "
                    f"errors {r.errors}  seeks {r.seeks}  gave up {r.gave_up}"
                )
            print(f"{kind:5} press play +{outage.press_play_after_s} s (watching {name})")
    every = [o for runs in outages.values() for o in runs]
    for player, figures in worst(every).items():
        print(f"worst {player:8} resumed +{figures['resumed_after_s']} s  "
              f"at target +{figures['at_target_after_s']} s")  # fmt: skip
    print_result(
        {
            "down_s": args.down,
            "max_drift_s": args.max_drift,
            "watch_s": watch_s,
            "outages": {name: [o.figures() for o in runs] for name, runs in outages.items()},
            "worst_s": worst(every),
            "baseline_stall_s": baseline,
            "target_resume_s": RESUME_TARGET_S,
            "target_press_play_s": PRESS_PLAY_TARGET_S,
            "met": all(met(o) for o in every),
            "dead_processes": dead,
            "load_avg": os.getloadavg()[0],
        }
    )


if __name__ == "__main__":
    main()
