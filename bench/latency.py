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
minus the playhead's presentation time) at 4 Hz; the first ``WARMUP_S`` after playback
starts are left out while dash.js converges on the target.  A stall is a ``waiting``
event after playback had started, until the next ``playing``.

Target (DESIGN.md §7): edge p50 <= 0.6 s, no stalls in 10 min.
Run: ``python bench/latency.py [--quick]`` (quick: 60 s measured, full: 600 s).
Ends with one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
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
WARMUP_S = 10.0
START_TIMEOUT_MS = 60_000
PROGRESS_EVERY_S = 10.0

READ_STATE = """() => {
  const lm = window.livemesh;
  return {state: lm.state, stalls: lm.stalls(), snapshot: lm.snapshot()};
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(raw: dict[str, Any], measured_from_ms: float) -> dict[str, Any]:
    """Figures of one player over the samples taken after ``measured_from_ms`` (page time)."""
    state = raw["state"]
    samples = [s for s in state["samples"] if s["t"] >= measured_from_ms]
    latencies = [s["latency"] for s in samples if s["latency"] is not None]
    stalls = [s for s in raw["stalls"] if s["at"] >= measured_from_ms]
    rates = [s["rate"] for s in samples]
    out: dict[str, Any] = {
        "samples": len(latencies),
        "stalls": len(stalls),
        "stall_s": round(sum(s["duration"] for s in stalls), 3),
        "errors": len(state["errors"]),
        "resolution": f"{raw['snapshot']['width']}x{raw['snapshot']['height']}",
    }
    if latencies:
        out.update(
            p50_s=round(statistics.median(latencies), 3),
            p95_s=round(percentile(latencies, 0.95), 3),
            min_s=round(min(latencies), 3),
            max_s=round(max(latencies), 3),
            rate_mean=round(statistics.fmean(rates), 4),
        )
    if state["errors"]:
        out["first_error"] = state["errors"][0]
    return out


def run(stack: LiveStack, player_url: str, seconds: float) -> dict[str, dict[str, Any]]:
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
            started: dict[str, float] = {}
            for name, page in pages.items():
                page.wait_for_function(
                    "() => window.livemesh.state.playing", timeout=START_TIMEOUT_MS
                )
                started[name] = page.evaluate("() => window.livemesh.state.firstPlayingAt")
                print(f"{name}: playing", flush=True)
            # The measurement window is wall-clock time by definition; report as it goes.
            end = time.monotonic() + WARMUP_S + seconds
            anchor = next(iter(pages.values()))
            while (left := end - time.monotonic()) > 0:
                anchor.wait_for_timeout(1000 * min(PROGRESS_EVERY_S, left))
                if stack.dead():
                    raise RuntimeError(f"stack processes died: {stack.dead()}")
                line = []
                for name, page in pages.items():
                    snap = page.evaluate("() => window.livemesh.snapshot()")
                    stalls = page.evaluate("() => window.livemesh.stalls().length")
                    line.append(
                        f"{name} latency {snap['latency']} s buffer {snap['buffer']} s "
                        f"rate {snap['rate']} stalls {stalls}"
                    )
                print(" | ".join(line), flush=True)
            return {
                name: summarise(page.evaluate(READ_STATE), started[name] + 1000 * WARMUP_S)
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
    edge, base = figures["edge"], figures["baseline"]
    for name, fig in figures.items():
        print(f"{name:8}: {fig}")
    result = {
        "player": "dash.js 5.2.1, Chromium headless",
        "live_delay_s": LIVE_DELAY_S,
        "seconds": seconds,
        "edge_p50_s": edge.get("p50_s"),
        "edge_p95_s": edge.get("p95_s"),
        "edge_stalls": edge["stalls"],
        "edge_stall_s": edge["stall_s"],
        "edge_errors": edge["errors"],
        "baseline": "dash.js straight from the origin (no edge tier)",
        "baseline_p50_s": base.get("p50_s"),
        "baseline_p95_s": base.get("p95_s"),
        "baseline_stalls": base["stalls"],
        "baseline_stall_s": base["stall_s"],
        "p50_ratio": (
            round(edge["p50_s"] / base["p50_s"], 3)
            if edge.get("p50_s") and base.get("p50_s")
            else None
        ),
        "target_p50_s": TARGET_P50_S,
        "meets_target": bool(
            edge.get("p50_s") is not None and edge["p50_s"] <= TARGET_P50_S and edge["stalls"] == 0
        ),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
