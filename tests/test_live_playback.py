"""Real players on the running demo stack: ffprobe and PyAV (FFmpeg's DASH and HLS demuxers).

The stack is the one ``make demo`` runs (embedded Redis, origin, live channel,
shield, two edges); the players use the tokenised edge URL it announces.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import av
import pytest

from tests.stack_helpers import RunningStack, demo_stack

LADDER_SIZES = {(1280, 720), (854, 480), (640, 360)}


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with demo_stack(wait_for=("mpd", "origin", "gateway")) as running:
        yield running


def test_ffprobe_sees_every_representation(stack: RunningStack) -> None:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
         "-of", "json", stack.mpd_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    streams = json.loads(probe.stdout)["streams"]
    video = {(s["width"], s["height"]) for s in streams if s["codec_name"] == "h264"}
    assert video == LADDER_SIZES
    assert [s["codec_name"] for s in streams].count("aac") == 1


def test_ffprobe_decodes_frames_from_every_representation(stack: RunningStack) -> None:
    """FFmpeg's DASH demuxer plays 6 s of the live stream, every rung and the audio.

    (PyAV's bundled FFmpeg has no DASH demuxer: it is built without libxml2.)
    """
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+6", "-count_frames",
         "-show_entries", "stream=index,codec_name,nb_read_frames", "-of", "json", stack.mpd_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    counts = {
        s["index"]: int(s.get("nb_read_frames", 0)) for s in json.loads(probe.stdout)["streams"]
    }
    assert len(counts) == 4
    assert min(counts.values()) >= 30, counts


def test_ffprobe_decodes_the_ll_hls_playlists_of_the_same_chunks(stack: RunningStack) -> None:
    """FFmpeg's HLS demuxer (whole segments: it reads no parts) plays the multivariant
    playlist beside the MPD, under the same token: every variant and the audio."""
    playlist = stack.mpd_url.removesuffix("manifest.mpd") + "master.m3u8"
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+4", "-count_frames",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json",
         playlist],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    streams = json.loads(probe.stdout)["streams"]
    video = {(s["width"], s["height"]) for s in streams if s["codec_name"] == "h264"}
    assert video == LADDER_SIZES
    assert "aac" in {s["codec_name"] for s in streams}
    # Frames from each (how many depends on the encoder keeping up on a loaded machine).
    assert min(int(s.get("nb_read_frames", 0)) for s in streams) > 0, streams


def test_edge_and_origin_serve_the_same_decodable_segment(stack: RunningStack) -> None:
    """One URL names one byte sequence on every tier, and PyAV decodes it."""
    mpd = fetch(stack.mpd_url).decode()
    template = re.search(r'initialization="([^"]+)/\$RepresentationID\$/init.mp4"', mpd)
    assert template is not None
    epoch = template.group(1)
    edge_dir = stack.mpd_url.rsplit("/", 1)[0]
    origin_dir = stack.announced["origin"].rsplit("/", 1)[0]
    for rep in re.findall(r'<Representation id="([^"]+)"', mpd):
        init = fetch(f"{edge_dir}/{epoch}/{rep}/init.mp4")
        segment = fetch(f"{edge_dir}/{epoch}/{rep}/0.m4s")
        assert fetch(f"{origin_dir}/{epoch}/{rep}/0.m4s") == segment
        with av.open(io.BytesIO(init + segment)) as container:
            frames = list(container.decode(container.streams[0]))
        assert frames, rep


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


def test_the_edge_refuses_a_tampered_token(stack: RunningStack) -> None:
    prefix, rest = stack.mpd_url.split("/t/", 1)
    token, path = rest.split("/", 1)
    tampered = f"{prefix}/t/{token[:-2]}{'AA' if not token.endswith('AA') else 'BB'}/{path}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=10)
    assert refused.value.code == 403


def test_players_sync_their_clock_with_an_edge_not_the_origin(stack: RunningStack) -> None:
    mpd = fetch(stack.mpd_url).decode()
    edge_base = stack.mpd_url.split("/t/", 1)[0]
    assert f'value="{edge_base}/time"' in mpd


def test_press_play_through_the_gateway_hands_out_a_playable_edge_url(
    stack: RunningStack,
) -> None:
    gateway = stack.announced["gateway"]
    account = {"email": "demo-viewer@example.org", "password": "a long demo passphrase"}
    call_json(f"{gateway}/v1/accounts:signUp", {**account, "displayName": "Demo"})
    token = call_json(f"{gateway}/v1/accounts:signIn", account)["accessToken"]
    started = call_json(f"{gateway}/v1/playback:start", {"content": "titles/demo"}, token)
    url = started["session"]["manifestUrls"][0]["url"]
    edge_base, signed_path = url.split("/t/", 1)
    assert edge_base != stack.announced["origin"].split("/live/", 1)[0], "players go to edges"
    assert signed_path.endswith("/live/demo/manifest.mpd")
    assert b'type="dynamic"' in fetch(url)


def call_json(url: str, body: dict[str, str], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
