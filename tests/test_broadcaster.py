"""A broadcaster's path from nothing to live, on ``livemesh demo`` as the README walks it: an
operator creates a channel with ``livemesh admin channel create`` (its stream key printed
once), Debian's ``ffmpeg`` pushes a picture over RTMP to the demo's ingest with that key, the
channel goes live, and a viewer who presses play gets the broadcaster's picture from an edge
and watches it in the app in Chromium.

The picture is one solid colour no slate has, so a decoded segment shows whether the
viewer got the broadcast or the slate. The channel's state is read through the gateway as
a person would (no event reaches an HTTP client): a bounded poll."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from player.harness import chromium_page, missing_setup
from tests.stack_helpers import ROOT, RunningStack, demo_stack
from tests.test_webapp import plays_live_for

pytestmark = pytest.mark.timeout(240)

CHANNEL = "ringside"
BROADCAST_RGB = (230, 40, 200)  # magenta: the slate is dark blue-grey
LIVE_WITHIN_S = 30  # from the first publish to the channel's first epoch, at most
POLL_S = 0.25  # between reads of the channel's state
SEGMENTS_TRIED = 6  # the first segments after the publish may still hold the slate
WATCH_S = 6


def livemesh(*args: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIVEMESH_CREDENTIAL_KEY_FILE": str(run_dir / "credential.key")}
    command = [sys.executable, "-m", "command.cli", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def call(url: str, body: dict[str, str] | None = None, token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers, method="GET" if data is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


@contextmanager
def pushing(rtmp_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's ffmpeg publishing a magenta picture and a tone, in real time, over RTMP."""
    colour = "0x{:02X}{:02X}{:02X}".format(*BROADCAST_RGB)
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
         "-f", "lavfi", "-i", f"color=c={colour}:size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", rtmp_url],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


def wait_live(gateway: str, publisher: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The channel once it is live; fails if the publisher quits or it takes too long."""
    deadline = time.monotonic() + LIVE_WITHIN_S
    while time.monotonic() < deadline:
        assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
        channel = call(f"{gateway}/v1/channels/{CHANNEL}")["channel"]
        if channel["state"] == "CHANNEL_STATE_LIVE":
            return channel
        time.sleep(POLL_S)  # a bounded poll of the API: nothing pushes its state to a client
    raise AssertionError(f"{CHANNEL} not live within {LIVE_WITHIN_S} s")


def centre_rgb(init: bytes, segment: bytes) -> np.ndarray:
    """The mean colour of the centre of a segment's last picture."""
    with av.open(io.BytesIO(init + segment), "r") as container:
        frames = list(container.decode(video=0))
    picture = frames[-1].to_ndarray(format="rgb24")
    h, w, _ = picture.shape
    centre: np.ndarray = picture[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3)
    return centre.mean(axis=0)


def viewer_gets_the_broadcast(gateway: str, channel: dict[str, Any]) -> int:
    """Press play on the channel as a signed-in viewer; the segment number, from the edge it
    was handed, whose picture is the broadcaster's."""
    account = {"email": "fan@example.org", "password": "ringside seats please"}
    call(f"{gateway}/v1/accounts:signUp", account)
    token = call(f"{gateway}/v1/accounts:signIn", account)["accessToken"]
    session = call(f"{gateway}/v1/playback:start", {"content": f"channels/{CHANNEL}"}, token)
    manifest = session["session"]["manifestUrls"][0]["url"]
    assert "/t/" in manifest and b"<MPD" in fetch(manifest)
    base = f"{manifest.rsplit('/', 1)[0]}/{channel['liveStatus']['epoch']}/v360"
    init = fetch(f"{base}/init.mp4")
    status = call(f"{gateway}/v1/channels/{CHANNEL}")["channel"]["liveStatus"]
    live = int(status.get("liveSegment", 0))  # JSON leaves out a zero
    seen = []
    for number in range(live + 1, live + 1 + SEGMENTS_TRIED):  # each held at the live edge
        rgb = centre_rgb(init, fetch(f"{base}/{number}.m4s"))
        if np.abs(rgb - np.array(BROADCAST_RGB)).max() < 40:
            return number
        seen.append(rgb.round().tolist())
    raise AssertionError(f"no segment showed the broadcast: {seen}")


def watch_in_the_app(stack: RunningStack, run_dir: Path) -> None:
    """The operator's console shows the channel on air; a viewer signs in to the app, opens
    the channel from "Live now" and watches WATCH_S s of it."""
    with chromium_page() as (page, log):
        page.goto(stack.announced["app"] + "console")
        operator = livemesh("admin", "token", "--role", "operator", run_dir=run_dir)
        page.get_by_label("Operator token").fill(operator.stdout.strip())
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("row", name=CHANNEL).filter(has_text="On air since").wait_for()
        page.goto(stack.announced["app"] + "#/signin")
        page.get_by_label("Email").fill("fan@example.org")
        page.get_by_label("Password").fill("ringside seats please")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Profile name").fill("Fan")
        page.get_by_role("button", name="Add profile").click()
        live_now = page.get_by_role("region", name="Live now")
        live_now.get_by_role("link", name="ringside").click()
        plays_live_for(page, WATCH_S)
        errors = [line for line in log.console if line.startswith(("error:", "pageerror:"))]
        assert not errors, log.console


def test_a_broadcaster_goes_live_with_ffmpeg_and_a_viewer_watches(tmp_path: Path) -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    run_dir = tmp_path / "run"
    args = ["--free-ports", "--run-dir", str(run_dir)]
    with demo_stack(("app", "rtmp"), args=args) as stack:
        gateway = stack.announced["gateway"]
        created = livemesh("admin", "channel", "create", CHANNEL, "--display-name", "Ringside",
                           "--rungs", "v360", "--gateway", gateway, run_dir=run_dir)  # fmt: skip
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert key.startswith(f"lmsk_{CHANNEL}_") and "\n" not in key
        # no broadcaster yet: ingest runs no encoder for it, the channel is idle
        assert call(f"{gateway}/v1/channels/{CHANNEL}")["channel"]["state"] == "CHANNEL_STATE_IDLE"

        wrong = livemesh("admin", "channel", "create", "Not An Id", "--gateway", gateway,
                         run_dir=run_dir)  # fmt: skip
        assert wrong.returncode == 1 and "channelId" in wrong.stderr

        with pushing(f"{stack.announced['rtmp']}/{key}") as publisher:
            channel = wait_live(gateway, publisher)
            assert channel["liveStatus"]["representations"] == ["v360", "a128"]
            viewer_gets_the_broadcast(gateway, channel)
            watch_in_the_app(stack, run_dir)

        # a rotated key replaces the old one at ingest; an ended channel takes no broadcaster
        rotated = livemesh("admin", "channel", "rotate", CHANNEL, "--gateway", gateway,
                           run_dir=run_dir)  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        assert rotated.stdout.strip() not in ("", key)
        with pushing(f"{stack.announced['rtmp']}/{key}") as refused:
            assert refused.wait(timeout=30) != 0
        ended = livemesh("admin", "channel", "end", CHANNEL, "--gateway", gateway, run_dir=run_dir)
        assert ended.returncode == 0, ended.stderr
        assert call(f"{gateway}/v1/channels/{CHANNEL}")["channel"]["state"] == "CHANNEL_STATE_ENDED"
