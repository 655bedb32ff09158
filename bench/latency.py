"""Benchmark: live latency of dash.js 5.2.1 in headless Chromium, through edge+shield.

Starts its own Redis (embedded), origin, live channel (default ladder), a shield on the
origin and an edge with tokens on the shield, as separate processes
(``player/harness.py``), and serves ``player/`` from another port.  Two players run at
once in one Chromium, each in its own browser context, both with ``liveDelay`` 0.5 s
(DESIGN.md §7):

* **edge**: the signed manifest on the edge (edge → shield → origin);
* **baseline**: the same channel's manifest straight from the origin, no edge tier.
  (DESIGN.md's own baseline, FFmpeg's ``-ldash`` output behind a chunked HTTP server,
  is not built here: the origin-direct player isolates what the edge tier adds, on the
  same encoder, the same machine and the same seconds.)

The page samples ``player.getCurrentLiveLatency()`` (wall clock, synced by UTCTiming,
minus the playhead's presentation time) at 4 Hz.  Figures are given from the first frame
and in the steady state, once the latency first comes within ``SETTLE_MARGIN_S`` of the
target (see :func:`summarise`).  A stall is a ``waiting`` event after playback had
started, until the next ``playing``; a seek is one of dash.js's own (a jump over a hole
in the buffered media, or back to the target past maxDrift).

Target (DESIGN.md §7): edge p50 <= 0.6 s, no stalls in 10 min.
Run: ``python bench/latency.py [--quick]`` (quick: 60 s measured, full: 600 s).
Ends with one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from player.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveStack,
    live_stack,
    missing_setup,
    page_url,
    serve_player,
)

CHANNEL = "bench"
LIVE_DELAY_S = 0.5
TARGET_P50_S = 0.6
SETTLE_MARGIN_S = 0.1
START_TIMEOUT_MS = 60_000
PROGRESS_EVERY_S = 10.0
SKIPPED = re.compile(r"skipping (\d+) frames")

READ_STATE = """() => {
  const lm = window.livemesh;
  return {state: lm.state, stalls: lm.stalls(), snapshot: lm.snapshot(), tracks: lm.tracks()};
}"""
# Why a player never started: where its playhead is and what each track has buffered.
DIAGNOSE = """() => {
  const s = window.livemesh.snapshot();
  return {currentTime: s.currentTime, readyState: s.readyState, tracks: window.livemesh.tracks(),
          errors: window.livemesh.state.errors};
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [s["latency"] for s in samples if s["latency"] is not None]
    if not latencies:
        return {"samples": 0}
    return {
        "samples": len(latencies),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "max_s": round(max(latencies), 3),
        "rate_mean": round(statistics.fmean(s["rate"] for s in samples), 4),
    }


def summarise(raw: dict[str, Any], started_ms: float | None) -> dict[str, Any]:
    """One player's figures: from its first frame, and once settled at the target.

    dash.js starts at the current segment's start (its only SAP), up to D + liveDelay
    behind, then catches up at the MPD's PlaybackRate@max (1.04): the first tens of
    seconds are convergence.  "Settled" begins at the first sample within
    ``SETTLE_MARGIN_S`` of the target; steady-state figures, stalls and seeks count from there.
    """
    state = raw["state"]
    if started_ms is None:
        return {"started": False, "errors": len(state["errors"]), "tracks": raw["tracks"]}
    samples = [s for s in state["samples"] if s["t"] >= started_ms]
    settled_at = next(
        (
            s["t"]
            for s in samples
            if s["latency"] is not None and s["latency"] <= LIVE_DELAY_S + SETTLE_MARGIN_S
        ),
        None,
    )
    since = settled_at if settled_at is not None else started_ms
    stalls = [s for s in raw["stalls"] if s["at"] >= since]
    seeks = [s for s in state["seeks"] if s["at"] >= since]
    out: dict[str, Any] = {
        "started": True,
        "settled": settled_at is not None,
        "time_to_settle_s": (
            round((settled_at - started_ms) / 1000, 1) if settled_at is not None else None
        ),
        "from_start": latency_figures(samples),
        "steady": latency_figures([s for s in samples if s["t"] >= since]),
        "stalls": len(stalls),
        "stall_s": round(sum(s["duration"] for s in stalls), 3),
        "seeks": len(seeks),
        "seeked_media_s": round(sum(max(0.0, s["to"] - s["from"]) for s in seeks), 3),
        "errors": len(state["errors"]),
        "resolution": f"{raw['snapshot']['width']}x{raw['snapshot']['height']}",
    }
    if state["errors"]:
        out["first_error"] = state["errors"][0]
    return out


def skipped_frames(channel_log: str) -> int:
    """Source frames the channel skipped because its encoder fell behind (each leaves a
    hole in the video timeline: a player's SourceBuffer drops the rest of that GOP)."""
    return sum(int(n) for n in SKIPPED.findall(channel_log))


def run(stack: LiveStack, player_url: str, seconds: float) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    mpds = {"edge": stack.signed_mpd(), "baseline": stack.origin_mpd}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages = {}
            for name, mpd in mpds.items():
                page = browser.new_context().new_page()
                page.goto(page_url(player_url, mpd, liveDelay=LIVE_DELAY_S))
                pages[name] = page
            started: dict[str, float | None] = {}
            for name, page in pages.items():
                try:
                    page.wait_for_function(
                        "() => window.livemesh.state.playing", timeout=START_TIMEOUT_MS
                    )
                except PlaywrightTimeout:
                    started[name] = None
                    print(f"{name}: never started: {page.evaluate(DIAGNOSE)}", flush=True)
                    continue
                started[name] = page.evaluate("() => window.livemesh.state.firstPlayingAt")
                print(f"{name}: playing", flush=True)
            # The measurement window is wall-clock time by definition; report as it goes.
            end = time.monotonic() + seconds
            anchor = next(iter(pages.values()))
            while (left := end - time.monotonic()) > 0:
                anchor.wait_for_timeout(1000 * min(PROGRESS_EVERY_S, left))
                if stack.dead():
                    raise RuntimeError(f"stack processes died: {stack.dead()}")
                line = []
                for name, page in pages.items():
                    if started[name] is None:
                        continue
                    snap = page.evaluate("() => window.livemesh.snapshot()")
                    stalls = page.evaluate("() => window.livemesh.stalls().length")
                    line.append(
                        f"{name} latency {snap['latency']} s buffer {snap['buffer']} s "
                        f"rate {snap['rate']} stalls {stalls}"
                    )
                print(" | ".join(line), flush=True)
            return {
                name: summarise(page.evaluate(READ_STATE), started[name])
                for name, page in pages.items()
            }
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s measured instead of 600 s")
    parser.add_argument("--seconds", type=float, help="measured seconds (overrides --quick)")
    args = parser.parse_args()
    seconds = args.seconds or (60.0 if args.quick else 600.0)
    if missing := missing_setup():
        raise SystemExit(f"run `make browser-deps` first: missing {missing}")
    with live_stack(CHANNEL) as stack, serve_player() as player_url:
        try:
            figures = run(stack, player_url, seconds)
        except Exception:
            print(stack.log_tail(), file=sys.stderr)
            raise
        skipped = skipped_frames((stack.logs / "channel.log").read_text())
    edge, base = figures["edge"], figures["baseline"]
    for name, fig in figures.items():
        print(f"{name:8}: {fig}")
    result = {
        "player": "dash.js 5.2.1, Chromium headless",
        "live_delay_s": LIVE_DELAY_S,
        "seconds": seconds,
        "edge_started": edge["started"],
        "edge_time_to_settle_s": edge.get("time_to_settle_s"),
        "edge_p50_s": edge.get("steady", {}).get("p50_s"),
        "edge_p95_s": edge.get("steady", {}).get("p95_s"),
        "edge_p50_from_start_s": edge.get("from_start", {}).get("p50_s"),
        "edge_stalls": edge.get("stalls"),
        "edge_stall_s": edge.get("stall_s"),
        "edge_seeks": edge.get("seeks"),
        "edge_errors": edge["errors"],
        "encoder_skipped_frames": skipped,
        "baseline": "dash.js straight from the origin (no edge tier)",
        "baseline_started": base["started"],
        "baseline_p50_s": base.get("steady", {}).get("p50_s"),
        "baseline_p95_s": base.get("steady", {}).get("p95_s"),
        "baseline_stalls": base.get("stalls"),
        "baseline_seeks": base.get("seeks"),
    }
    edge_p50, base_p50 = result["edge_p50_s"], result["baseline_p50_s"]
    result["p50_ratio"] = round(edge_p50 / base_p50, 3) if edge_p50 and base_p50 else None
    result["target_p50_s"] = TARGET_P50_S
    result["meets_target"] = bool(
        edge_p50 is not None and edge_p50 <= TARGET_P50_S and edge.get("stalls") == 0
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
