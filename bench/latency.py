"""Benchmark: live latency of dash.js, Shaka or hls.js in headless Chromium, through edge+shield.

Phase 1 starts its own Redis (embedded), origin, live channel (default ladder), a shield
on the origin and an edge with tokens on the shield, as separate processes
(``player/harness.py``), and serves ``player/`` from another port.  Two players run at
once in one Chromium, each in its own browser context:

* **edge**: the signed manifest on the edge (edge -> shield -> origin);
* **origin**: the same channel's manifest straight from the origin, no edge tier.

Phase 2, the baseline (DESIGN.md §7), alone on the machine: Debian's ``ffmpeg`` encodes the
same ladder (three x264 rungs, GOP = D, AAC) as LL-DASH (``-ldash 1 -streaming 1``, chunks
of C) into a folder, and a small chunked HTTP server streams each segment while FFmpeg
writes it (``--no-ffmpeg`` leaves it out).

Every player runs with ``liveDelay`` 0.5 s and the same catch-up range (0.96-1.04).  The
page samples ``player.getCurrentLiveLatency()`` (wall clock, synced by UTCTiming, minus
the playhead's presentation time) at 4 Hz.  Figures are given from the first frame and in
the steady state, once the latency first comes within ``SETTLE_MARGIN_S`` of the target
(see :func:`summarise`).  A stall is a ``waiting`` event after playback had started, until
the next ``playing``; a seek is one of dash.js's own (a jump over a hole in the buffered
media) or the page's (back to the target past maxDrift).

``--player shaka`` runs Shaka Player (low-latency mode, the same liveDelay) instead;
``--player hlsjs`` runs hls.js in low-latency mode on the LL-HLS playlists of the same
chunks, its target the playlist's PART-HOLD-BACK (no liveDelay given), and has no FFmpeg
phase (FFmpeg's baseline is LL-DASH): the origin is its baseline.

Target (DESIGN.md §7): edge p50 <= 0.6 s (hls.js: 1.0 s), no stalls in 10 min.
Run: ``python bench/latency.py [--quick] [--player dashjs|shaka|hlsjs]`` (each phase 60 s
with --quick, else 600 s).
Ends with one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.channel_config import ChannelConfig
from kernel.ports import free_port
from kernel.stats import percentile
from kernel.supervise import wait_ready
from player.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    live_stack,
    missing_setup,
    page_url,
    serve_player,
)

CHANNEL = "bench"
LIVE_DELAY_S = 0.5
TARGET_P50_S = 0.6
HLS_TARGET_P50_S = 1.0  # hls.js in low-latency mode (DESIGN.md §7)
HLS_SETTLE_S = 0.7  # PART-HOLD-BACK (3 parts of 0.2 s) and the settle margin
PLAYERS = {"dashjs": "dash.js 5.2.1", "shaka": "Shaka Player 5.2.12", "hlsjs": "hls.js 1.7.4"}
SETTLE_MARGIN_S = 0.1
# The same catch-up range for every player: livemesh's MPD says it (PlaybackRate 0.96-1.04),
# FFmpeg's does not (dash.js would default to 0.5-1.5).
CATCHUP = {"minRate": 0.96, "maxRate": 1.04}
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


def latency_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [s["latency"] for s in samples if s["latency"] is not None]
    if not latencies:
        return {"samples": 0}
    return {
        "samples": len(latencies),
        "p50_s": round(percentile(latencies, 0.5), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "max_s": round(max(latencies), 3),
        "rate_mean": round(statistics.fmean(s["rate"] for s in samples), 4),
    }


def summarise(
    raw: dict[str, Any], started_ms: float | None, settle_s: float = LIVE_DELAY_S + SETTLE_MARGIN_S
) -> dict[str, Any]:
    """One player's figures: from its first frame, and once settled at the target.

    dash.js starts at the current segment's start (its only SAP), up to D + liveDelay
    behind, then catches up at the MPD's PlaybackRate@max (1.04): the first tens of
    seconds are convergence.  "Settled" begins at the first sample within
    ``SETTLE_MARGIN_S`` of the target (``settle_s``); steady-state figures, stalls and seeks
    count from there.
    """
    state = raw["state"]
    if started_ms is None:
        return {"started": False, "errors": len(state["errors"]), "tracks": raw["tracks"]}
    samples = [s for s in state["samples"] if s["t"] >= started_ms]
    settled_at = next(
        (s["t"] for s in samples if s["latency"] is not None and s["latency"] <= settle_s),
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


def run_players(
    player_url: str,
    mpds: dict[str, str],
    seconds: float,
    dead: Callable[[], list[str]],
    player: str = "dashjs",
) -> dict[str, dict[str, Any]]:
    """One Chromium, one browser context per manifest, ``player`` playing each for
    ``seconds``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pages = {}
            for name, mpd in mpds.items():
                page = browser.new_context().new_page()
                delay = None if player == "hlsjs" else LIVE_DELAY_S
                page.goto(page_url(player_url, mpd, player=player, liveDelay=delay, **CATCHUP))
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
                if dead():
                    raise RuntimeError(f"processes died: {dead()}")
                line = []
                for name, page in pages.items():
                    if started[name] is None:
                        continue
                    snap = page.evaluate("() => window.livemesh.snapshot()")
                    stalls = page.evaluate("() => window.livemesh.stalls().length")
                    line.append(
                        f"{name} latency {snap['latency']} s buffer {snap['buffer']} s "
                        f"rate {snap['rate']:.3f} stalls {stalls}"
                    )
                print(" | ".join(line), flush=True)
            settle_s = HLS_SETTLE_S if player == "hlsjs" else LIVE_DELAY_S + SETTLE_MARGIN_S
            return {
                name: summarise(page.evaluate(READ_STATE), started[name], settle_s)
                for name, page in pages.items()
            }
        finally:
            browser.close()


# -- the baseline: FFmpeg's own LL-DASH output behind a chunked HTTP server -------------------


def ffmpeg_ldash_command(out_dir: Path, time_url: str, config: ChannelConfig) -> list[str]:
    """Debian's ffmpeg CLI encoding the channel's ladder (same rungs, GOP = D, AAC) as
    LL-DASH: chunks of C, availabilityTimeOffset, target latency 0.5 s, written
    progressively to ``{segment}.tmp`` and renamed when complete."""
    gop = config.segment_ms * config.frame_rate // 1000
    rungs = config.video
    split = "".join(f"[s{i}]" for i in range(len(rungs)))
    graph = f"[0:v]split={len(rungs)}{split};" + ";".join(
        f"[s{i}]scale={r.width}:{r.height}[v{i}]" for i, r in enumerate(rungs)
    )
    top = rungs[0]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={top.width}x{top.height}:rate={config.frame_rate}"]
    cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={config.audio.sample_rate}"]
    cmd += ["-filter_complex", graph]
    for i, rung in enumerate(rungs):
        cmd += ["-map", f"[v{i}]", f"-b:v:{i}", str(rung.bitrate)]
    cmd += ["-map", "1:a", "-c:a", "aac", "-b:a", str(config.audio.bitrate), "-ac", "2"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"]
    cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    cmd += ["-f", "dash", "-ldash", "1", "-streaming", "1", "-target_latency", "0.5"]
    cmd += ["-seg_duration", str(config.segment_ms / 1000), "-frag_type", "duration"]
    cmd += ["-frag_duration", str(config.chunk_ms / 1000), "-use_template", "1"]
    cmd += ["-use_timeline", "0", "-window_size", "10", "-extra_window_size", "5"]
    cmd += ["-utc_timing_url", time_url, "-format_options", "movflags=cmaf"]
    cmd += ["-adaptation_sets", "id=0,streams=v id=1,streams=a"]
    return [*cmd, str(out_dir / "manifest.mpd")]


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Date"}
FILE_POLL_S = 0.005  # ffmpeg gives no event for a grown file; 5 ms is well under one chunk


async def _serve_time(request: web.Request) -> web.Response:
    now_ms = time.time_ns() // 1_000_000
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms // 1000))
    return web.Response(
        text=f"{stamp}.{now_ms % 1000:03d}Z", headers={**CORS, "Cache-Control": "no-store"}
    )


def chunked_file_app(out_dir: Path, hold_s: float) -> web.Application:
    """``/ff/{name}``: the manifest and init as files; a segment still being written is
    streamed as it grows (chunked), one not started yet is held up to ``hold_s``."""

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if "/" in name or name.startswith("."):
            raise web.HTTPNotFound(headers=CORS)
        final, partial = out_dir / name, out_dir / f"{name}.tmp"
        if name.endswith(".mpd"):
            if not final.exists():
                raise web.HTTPNotFound(headers=CORS)
            return web.Response(
                body=final.read_bytes(),
                content_type="application/dash+xml",
                headers={**CORS, "Cache-Control": "no-cache"},
            )
        deadline = time.monotonic() + hold_s
        while not final.exists() and not partial.exists():
            if time.monotonic() > deadline:
                raise web.HTTPNotFound(headers={**CORS, "Cache-Control": "max-age=0"})
            await asyncio.sleep(FILE_POLL_S)
        try:
            handle = partial.open("rb") if not final.exists() else final.open("rb")
        except FileNotFoundError:  # renamed between the check and the open
            handle = final.open("rb")
        response = web.StreamResponse(headers={**CORS, "Content-Type": "video/mp4"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with handle, suppress(ConnectionResetError):  # a player may abandon a request
            while True:
                data = handle.read(1 << 16)
                if data:
                    await response.write(data)
                    continue
                # At the end of what exists: done once ffmpeg has renamed it (complete).
                if final.exists() and handle.tell() >= final.stat().st_size:
                    break
                await asyncio.sleep(FILE_POLL_S)
            await response.write_eof()
        return response

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(headers={**CORS, "Access-Control-Allow-Headers": "*"})

    app = web.Application()
    app.router.add_get("/time", _serve_time)
    app.router.add_get("/ff/{name}", serve)
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    return app


@contextmanager
def ffmpeg_ldash_origin(config: ChannelConfig) -> Iterator[tuple[str, Callable[[], list[str]]]]:
    """FFmpeg writing LL-DASH into a temporary folder, served chunked; yields the MPD URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="livemesh-ldash-") as folder:
        out_dir = Path(folder)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(chunked_file_app(out_dir, config.segment_ms / 1000))
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        thread = threading.Thread(target=loop.run_forever, name="ldash-http", daemon=True)
        thread.start()
        ffmpeg = subprocess.Popen(ffmpeg_ldash_command(out_dir, f"{base}/time", config))
        try:
            if not wait_ready(f"{base}/ff/manifest.mpd", threading.Event(), 30.0):
                raise RuntimeError("ffmpeg wrote no manifest")
            yield f"{base}/ff/manifest.mpd", lambda: [] if ffmpeg.poll() is None else ["ffmpeg"]
        finally:
            ffmpeg.terminate()
            ffmpeg.wait()
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def figures_of(prefix: str, fig: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{prefix}_started": fig["started"],
        f"{prefix}_time_to_settle_s": fig.get("time_to_settle_s"),
        f"{prefix}_p50_s": fig.get("steady", {}).get("p50_s"),
        f"{prefix}_p95_s": fig.get("steady", {}).get("p95_s"),
        f"{prefix}_p50_from_start_s": fig.get("from_start", {}).get("p50_s"),
        f"{prefix}_stalls": fig.get("stalls"),
        f"{prefix}_stall_s": fig.get("stall_s"),
        f"{prefix}_seeks": fig.get("seeks"),
        f"{prefix}_errors": fig["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s per phase instead of 600 s")
    parser.add_argument("--seconds", type=float, help="seconds per phase (overrides --quick)")
    parser.add_argument(
        "--no-ffmpeg", action="store_true", help="leave out the FFmpeg -ldash baseline phase"
    )
    parser.add_argument("--player", choices=sorted(PLAYERS), default="dashjs")
    args = parser.parse_args()
    hls = args.player == "hlsjs"
    seconds = args.seconds or (60.0 if args.quick else 600.0)
    if missing := missing_setup():
        raise SystemExit(f"run `make browser-deps` first: missing {missing}")
    with serve_player() as player_url:
        # Phase 1: livemesh, through edge+shield and straight from the origin at once.
        print(f"phase 1: livemesh channel, {seconds:.0f} s", flush=True)
        with live_stack(CHANNEL) as stack:
            mpds = {"edge": stack.signed_mpd(), "origin": stack.origin_mpd}
            if hls:  # the multivariant playlist beside each MPD
                mpds = {name: url.rsplit("/", 1)[0] + "/master.m3u8" for name, url in mpds.items()}
            try:
                figures = run_players(player_url, mpds, seconds, stack.dead, args.player)
            except Exception:
                print(stack.log_tail(), file=sys.stderr)
                raise
            skipped = skipped_frames((stack.logs / "channel.log").read_text())
        # Phase 2, alone on the machine: FFmpeg's own LL-DASH, same ladder, chunked server.
        if not args.no_ffmpeg and not hls:
            print(f"phase 2: ffmpeg -ldash baseline, {seconds:.0f} s", flush=True)
            with ffmpeg_ldash_origin(ChannelConfig(CHANNEL)) as (mpd, dead):
                figures.update(run_players(player_url, {"ffmpeg": mpd}, seconds, dead, args.player))
    for name, fig in figures.items():
        print(f"{name:8}: {fig}")
    result: dict[str, Any] = {
        "player": f"{PLAYERS[args.player]}, Chromium headless",
        "live_delay_s": None if hls else LIVE_DELAY_S,
        "seconds_per_phase": seconds,
        **figures_of("edge", figures["edge"]),
        "encoder_skipped_frames": skipped,
        **figures_of("origin", figures["origin"]),
    }
    edge_p50 = result["edge_p50_s"]
    if "ffmpeg" in figures:
        result["baseline"] = "ffmpeg -ldash (Debian CLI), same ladder, chunked file server"
        result.update(figures_of("ffmpeg", figures["ffmpeg"]))
        base_p50 = result["ffmpeg_p50_s"]
    else:
        result["baseline"] = f"{PLAYERS[args.player]} straight from the origin (no edge tier)"
        base_p50 = result["origin_p50_s"]
    result["p50_ratio"] = round(edge_p50 / base_p50, 3) if edge_p50 and base_p50 else None
    target = HLS_TARGET_P50_S if hls else TARGET_P50_S
    result["target_p50_s"] = target
    result["meets_target"] = bool(
        edge_p50 is not None and edge_p50 <= target and figures["edge"].get("stalls") == 0
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
