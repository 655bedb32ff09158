"""Press play to first frame in the viewer app, in Chromium, on ``livemesh demo``.

A signed-in viewer opens the demo title's page and presses Play; the time from that click
to the first video frame the browser presents (``requestVideoFrameCallback``; also
``loadeddata``) is one sample. What lies between: the app's ``/v1/playback:start``
through the gateway (playback, registry, signed URLs), the player page, dash.js fetching
the edge's MPD, its clock sync, the init segments and the live edge's chunks, decode.

Baseline, in the same run and the same page, alternating with the app's plays so both see
the same load: dash.js (defaults) given the demo's signed edge MPD URL directly, timed
from ``initialize`` to its first presented frame: no API call, no routing, no app.

Each play is a fresh load of the page (scripts from the browser's cache, as on a return
visit); the first, cold load is reported apart. Target: the app's p50 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import CLI, ROOT, loadavg, print_result

from kernel.stats import spread
from player.harness import chromium_page, missing_setup

TARGET_P50_S = 1.0
PLAY_TIMEOUT_MS = 20_000
ANNOUNCED = re.compile(r"([a-z0-9-]+): ([a-z]+://\S+)")

# In every page: the time of the click on Play, and of the first frame of any video
# (media events do not bubble, but a capture listener on the document sees them).
PROBE = """
window.__ff = {};
document.addEventListener('click', (e) => {
  if (e.target.closest('a[href^="#/watch/"]')) window.__ff.click = performance.now();
}, true);
document.addEventListener('loadeddata', () => {
  window.__ff.loadeddata ??= performance.now();
}, true);
document.addEventListener('loadstart', (e) => {
  e.target.requestVideoFrameCallback?.(() => { window.__ff.frame ??= performance.now(); });
}, true);
"""
SIGN_UP = """async ({ email, password }) => {
  const post = async (path, body, token) => {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const reply = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
    if (!reply.ok) throw new Error(`${path}: ${reply.status} ${await reply.text()}`);
    return reply.json();
  };
  await post('/v1/accounts:signUp', { email, password });
  const session = await post('/v1/accounts:signIn', { email, password });
  localStorage.setItem('livemesh.session', JSON.stringify(session));
  const { profile } = await post('/v1/profiles', { profile: { displayName: 'Bench' } },
                                 session.accessToken);
  localStorage.setItem('livemesh.profile', JSON.stringify(profile));
}"""
# the app's /v1/playback:start, as the browser timed it (0 on the baseline's page)
START_CALL_MS = """() => performance.getEntriesByType('resource')
  .filter((e) => e.name.endsWith('/v1/playback:start')).reduce((_, e) => e.duration, 0)"""
DIRECT = """(url) => {
  const video = document.createElement('video');
  video.muted = true;
  document.body.append(video);
  window.__ff.click = performance.now();
  video.requestVideoFrameCallback(() => { window.__ff.frame ??= performance.now(); });
  dashjs.MediaPlayer().create().initialize(video, url, true);
}"""


@contextmanager
def demo() -> Iterator[dict[str, str]]:
    """``livemesh demo`` on free ports; its announced URLs once the app and MPD answer."""
    with tempfile.TemporaryDirectory(prefix="livemesh-first-frame-") as scratch:
        log = (Path(scratch) / "demo.log").open("wb")
        process = subprocess.Popen(
            [*CLI, "demo", "--free-ports", "--run-dir", f"{scratch}/run"],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        announced: dict[str, str] = {}
        try:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.strip()
                if line.startswith("http") and line.endswith(".mpd"):
                    announced["mpd"] = line
                elif found := ANNOUNCED.fullmatch(line):
                    announced[found.group(1)] = found.group(2)
                if {"app", "mpd"} <= announced.keys():
                    break
            if not {"app", "mpd"} <= announced.keys():
                raise SystemExit(f"the demo did not start; its log: {log.name}")
            yield announced
        finally:
            process.send_signal(2)
            process.wait(timeout=60)
            log.close()


def app_play(page: Any, app: str) -> dict[str, float]:
    """One press of Play on the demo title's page: ms from the click to its first frame."""
    page.goto(app + "#/title/demo")
    page.reload()  # a fresh page each play (a hash change alone keeps the old one)
    page.get_by_role("link", name="Play").click()
    return _first_frame(page)


def direct_play(page: Any, app: str, mpd: str) -> dict[str, float]:
    """dash.js on the MPD URL itself, in the app's origin with nothing of the app running."""
    page.goto(app + "#/signin")
    page.reload()
    page.wait_for_function("() => window.dashjs !== undefined")
    page.evaluate(DIRECT, mpd)
    return _first_frame(page)


def _first_frame(page: Any) -> dict[str, float]:
    page.wait_for_function("() => window.__ff.frame !== undefined", timeout=PLAY_TIMEOUT_MS)
    marks: dict[str, float] = page.evaluate("() => window.__ff")
    return {
        "frame_ms": marks["frame"] - marks["click"],
        "loadeddata_ms": marks.get("loadeddata", marks["frame"]) - marks["click"],
        "start_ms": page.evaluate(START_CALL_MS),
    }


def figures(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    """Count, p50, p90, p99 and max of one mark, in ms."""
    return spread([s[key] for s in samples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 plays of each instead of 40")
    parser.add_argument("--plays", type=int, help="plays of each (overrides --quick)")
    args = parser.parse_args()
    plays = args.plays or (10 if args.quick else 40)
    if missing := missing_setup():
        raise SystemExit(f"run `make browser-deps` first: missing {missing}")
    load_before = loadavg()
    with demo() as urls, chromium_page() as (page, log):
        app = urls["app"]
        page.add_init_script(PROBE)
        page.goto(app + "#/signin")
        page.evaluate(SIGN_UP, {"email": "bench@example.org", "password": "first frame bench"})
        cold = app_play(page, app)
        app_samples, direct_samples = [], []
        for i in range(plays):
            app_samples.append(app_play(page, app))
            direct_samples.append(direct_play(page, app, urls["mpd"]))
            app_ms, direct_ms = app_samples[-1]["frame_ms"], direct_samples[-1]["frame_ms"]
            print(f"play {i + 1}/{plays}: app {app_ms:.0f} ms, dash.js direct {direct_ms:.0f} ms")
        errors = [line for line in log.console if line.startswith(("error:", "pageerror:"))]
    app_fig, direct_fig = figures(app_samples, "frame_ms"), figures(direct_samples, "frame_ms")
    result: dict[str, object] = {
        "player": "the viewer app (dash.js 5.2.1), Chromium headless, demo title (live)",
        "plays": plays,
        "app_first_frame": app_fig,
        "app_loadeddata": figures(app_samples, "loadeddata_ms"),
        "app_playback_start_call": figures(app_samples, "start_ms"),
        "app_cold_first_frame_ms": round(cold["frame_ms"], 1),
        "baseline": "dash.js defaults on the signed edge MPD URL directly, same page and run",
        "direct_first_frame": direct_fig,
        "p50_ratio": round(app_fig["p50"] / direct_fig["p50"], 3),
        "target_p50_s": TARGET_P50_S,
        "meets_target": app_fig["p50"] <= TARGET_P50_S * 1000,
        "console_errors": len(errors),
        "load_before": load_before,
        "load_after": loadavg(),
    }
    print_result(result)


if __name__ == "__main__":
    main()
