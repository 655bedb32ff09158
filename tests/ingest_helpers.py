"""A real ingest process inside a test, and what a viewer would see of its channel."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fractions
import io
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import av
import numpy as np
import redis.asyncio as aioredis
from aiohttp import web
from aiortc import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kernel import clock
from kernel.channel_config_store import put_channel_config
from kernel.isobmff import iter_boxes
from live.ingest.keys import RedisStreamKeys
from live.ingest.server import IngestServer
from live.origin import build_app
from live.state import ChannelStore
from tests.live_helpers import small_config

REPO = Path(__file__).resolve().parent.parent

BROADCAST_RGB = (230, 40, 200)  # a magenta no slate has
SLATE_MAX_BRIGHTNESS = 60  # the slate's centre is dark blue-grey
SEGMENTS_TO_WAIT = 10  # a channel on air completes a segment every segment duration


@contextlib.asynccontextmanager
async def ingest_server(
    redis: aioredis.Redis,
    channel: str,
    key: str,
    rtmp: bool = False,
    others: dict[str, str] | None = None,
) -> AsyncIterator[IngestServer]:
    """An ingest process serving small channels (``channel`` and ``others``: name -> key)."""
    keys = {channel: key, **(others or {})}
    configs = [small_config(name) for name in keys]
    for config in configs:  # created first, as the channels service does
        await put_channel_config(redis, config)
    for name, stream_key in keys.items():
        await RedisStreamKeys(redis).issue(name, stream_key)
    server = IngestServer(
        redis,
        configs,
        RedisStreamKeys(redis),
        rtmp_port=0 if rtmp else None,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def next_segment_centre(store: ChannelStore, rep: str = "v360") -> tuple[int, np.ndarray]:
    """The first segment of ``rep`` wholly captured from now on: its number and centre colour.

    Fails (``TimeoutError``) when no such segment completes within a few segments'
    time: the channel stopped, or moved to another epoch.
    """
    epoch = await store.current_epoch()
    config = await store.get_config()
    assert epoch is not None and config is not None
    since_ms = clock.now_ms()
    async with asyncio.timeout(SEGMENTS_TO_WAIT * config.segment_ms / 1000):
        async for event in store.events():
            starts_ms = epoch.start_ms + event.segment * config.segment_ms
            wanted = event.epoch == epoch.id and event.rep == rep and event.last
            if wanted and starts_ms >= since_ms:
                break
        else:
            raise AssertionError("the event stream ended")
    init = await store.init_segment(epoch.id, rep)
    chunks, _ = await store.chunks(epoch.id, rep, event.segment)
    assert init is not None
    with av.open(io.BytesIO(init + b"".join(chunks)), "r") as container:
        frames = list(container.decode(video=0))
    picture = frames[len(frames) // 2].to_ndarray(format="rgb24")
    h, w = picture.shape[:2]
    centre = picture[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    return event.segment, centre.reshape(-1, 3).mean(axis=0)


def is_broadcast(rgb: np.ndarray) -> bool:
    return bool(np.abs(rgb - np.array(BROADCAST_RGB)).max() < 40)


def is_slate(rgb: np.ndarray) -> bool:
    return bool(rgb.max() < SLATE_MAX_BRIGHTNESS)


class ColourTrack(VideoStreamTrack):
    """A broadcaster's camera: a solid magenta picture, 320x180 unless told."""

    def __init__(self, size: tuple[int, int] = (320, 180)) -> None:
        super().__init__()
        self.size = size

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        width, height = self.size
        picture = np.empty((height, width, 3), np.uint8)
        picture[:] = BROADCAST_RGB
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A broadcaster's microphone: a 440 Hz tone, 20 ms frames."""

    async def recv(self) -> av.AudioFrame:
        silence = await super().recv()  # paced by aiortc
        assert isinstance(silence, av.AudioFrame) and silence.pts is not None
        n = silence.samples
        t = (silence.pts + np.arange(n)) / silence.sample_rate
        wave = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        frame.sample_rate, frame.pts = silence.sample_rate, silence.pts
        frame.time_base = fractions.Fraction(1, silence.sample_rate)
        return frame


def broadcaster_tracks(size: tuple[int, int] = (320, 180)) -> list[MediaStreamTrack]:
    return [ColourTrack(size), ToneTrack()]


async def wait_threading_event(event: object, timeout_s: float) -> bool:
    """Awaits a ``threading.Event`` without blocking the loop."""
    import threading

    assert isinstance(event, threading.Event)
    return await asyncio.to_thread(event.wait, timeout_s)


# -- real independent publishers, with the send time burnt into the picture ------------------

PUBLISH_SIZE = (640, 360)
PUBLISH_FPS = 30
CODE_BITS = 32  # the send time in ms, modulo 2**32, as a row of black/white blocks
CODE_STRIP = 9  # the code strip is the top 1/9 of the picture


def coded_picture(send_ms: int, size: tuple[int, int] = PUBLISH_SIZE) -> np.ndarray:
    """The magenta broadcast picture (rgb24) with ``send_ms`` as a bar code along its top."""
    width, height = size
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = BROADCAST_RGB
    block = width // CODE_BITS
    code = send_ms % 2**CODE_BITS
    for bit in range(CODE_BITS):
        on = (code >> (CODE_BITS - 1 - bit)) & 1
        picture[: height // CODE_STRIP, bit * block : (bit + 1) * block] = 255 if on else 0
    return picture


def read_code(frame: av.VideoFrame, now_ms: int) -> int | None:
    """The send time (ms, wall clock) burnt into ``frame`` at any rung's size, or ``None``."""
    luma = frame.to_ndarray(format="gray")
    h, w = luma.shape
    row = h // CODE_STRIP // 2
    block = w / CODE_BITS
    levels = [int(luma[row, int((bit + 0.5) * block)]) for bit in range(CODE_BITS)]
    if any(40 < level < 215 for level in levels):
        return None  # not a code strip (the slate, or a picture mid-change)
    code = sum(1 << (CODE_BITS - 1 - bit) for bit, level in enumerate(levels) if level >= 128)
    sent = now_ms - ((now_ms - code) % 2**CODE_BITS)
    return sent if now_ms - sent < 60_000 else None


def p256_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and key (PEM) for FFmpeg's whip muxer.

    FFmpeg's GnuTLS build otherwise makes a P-224 one, which the OpenSSL under
    aiortc refuses (see :mod:`live.ingest.whip`).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "publisher")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "publisher-cert.pem", directory / "publisher-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Publisher:
    """A publisher process (or pipeline) started for a test; stopped and reaped at the end."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes

    @property
    def main(self) -> asyncio.subprocess.Process:
        return self.processes[-1]

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
        for process in self.processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            if process.returncode is None:
                process.kill()
                await process.wait()

    def signal(self, sig: int) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(sig)


async def start_whip_publisher(
    url: str, key: str, cert: tuple[Path, Path], size: tuple[int, int] = PUBLISH_SIZE
) -> Publisher:
    """FFmpeg's whip muxer (PyAV's FFmpeg 8.1) in its own process: coded picture and a tone."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.ingest_helpers", "whip", f"{size[0]}x{size[1]}",
        url, key, str(cert[0]), str(cert[1]), cwd=REPO, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return Publisher([process])


async def start_rtmp_publisher(url: str, size: tuple[int, int] = PUBLISH_SIZE) -> Publisher:
    """Debian's ``ffmpeg`` CLI publishing FLV over RTMP; the coded pictures come on a pipe."""
    read_end, write_end = os.pipe()
    try:
        pictures = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ingest_helpers", "raw", f"{size[0]}x{size[1]}",
            cwd=REPO, stdout=write_end,
        )  # fmt: skip
        width, height = size
        ffmpeg = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", str(PUBLISH_FPS), "-use_wallclock_as_timestamps", "1", "-i", f"pipe:{read_end}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
            stderr=asyncio.subprocess.PIPE, pass_fds=(read_end,),
        )  # fmt: skip
    finally:
        os.close(read_end)
        os.close(write_end)
    return Publisher([pictures, ffmpeg])


def _paced_pictures(stop: list[bool], size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, coded picture) at the publishing rate, in real time, until ``stop``."""
    start = time.monotonic()
    index = 0
    while not stop[0]:
        due = start + index / PUBLISH_FPS
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing a real-time source, not synchronisation
        yield index, coded_picture(time.time_ns() // 1_000_000, size)
        index += 1


def _run_raw(size: tuple[int, int]) -> None:
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    out = sys.stdout.buffer
    with contextlib.suppress(BrokenPipeError):
        for _, picture in _paced_pictures(stop, size):
            out.write(picture.tobytes())
            out.flush()


def _run_whip(size: tuple[int, int], url: str, key: str, cert_file: str, key_file: str) -> None:
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    options = {
        "authorization": key,
        "handshake_timeout": "10000",
        "cert_file": cert_file,
        "key_file": key_file,
    }
    with av.open(url, "w", format="whip", options=options) as container:
        video = container.add_stream("libx264", rate=PUBLISH_FPS)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        # the whip muxer takes H.264 baseline without B-frames, and Opus
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                         "bf": "0", "g": str(PUBLISH_FPS)}  # fmt: skip
        audio = container.add_stream("libopus", rate=48_000)
        audio.layout, audio.bit_rate = "stereo", 64_000
        samples = 0
        for index, picture in _paced_pictures(stop, size):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            container.mux(video.encode(frame))
            while samples < (index + 1) * 48_000 // PUBLISH_FPS:
                t = (samples + np.arange(960)) / 48_000
                tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
                sound = av.AudioFrame.from_ndarray(
                    np.stack([tone, tone]), format="fltp", layout="stereo"
                )
                sound.sample_rate, sound.pts = 48_000, samples
                container.mux(audio.encode(sound))
                samples += 960
        container.mux(video.encode(None))


# -- what reaches the origin --------------------------------------------------------------


@contextlib.asynccontextmanager
async def origin_server(redis: aioredis.Redis) -> AsyncIterator[str]:
    """The real origin (``live.origin.build_app``) on loopback; yields its base URL."""
    runner = web.AppRunner(build_app(redis), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def complete_chunks(data: bytes) -> int:
    """Bytes of ``data`` that end with a complete ``mdat`` (a whole CMAF chunk)."""
    end = 0
    with contextlib.suppress(ValueError):  # the box after the last whole one is partial
        for found in iter_boxes(data):
            if found.type == b"mdat":
                end = found.end
    return end


def _packets(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r") as container:
        return sum(1 for p in container.demux(video=0) if p.size)


def _decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), "r") as container:
        return list(container.decode(video=0))


async def chunk_latencies(
    http: aiohttp.ClientSession,
    base: str,
    store: ChannelStore,
    rep: str,
    segments: int,
    coded: bool = True,
) -> list[int]:
    """Ingest-to-origin latency of each chunk of the next ``segments`` live segments.

    Each segment is read from the origin as it is produced (chunked transfer).
    When a chunk is complete its arrival is noted with the number of pictures
    so far; once the segment is whole it is decoded (off the event loop), and
    the bar code of each chunk's last picture names when the publisher sent it:
    latency = arrival of the chunk here - that send time.  ``coded=False`` (a
    synthetic source, no bar code): the last picture's capture time on the
    channel's own timeline (AST + its media time) stands in for the send time.
    """
    epoch = await store.current_epoch()
    config = await store.get_config()
    assert epoch is not None and config is not None
    prefix = f"{base}/live/{store.channel}/{epoch.id}/{rep}"
    async with http.get(f"{prefix}/init.mp4") as response:
        assert response.status == 200
        init = await response.read()
    async for event in store.events():
        if event.rep == rep:
            first = event.segment + 1
            break
    latencies: list[int] = []
    for number in range(first, first + segments):
        data, counted_to = b"", 0
        arrivals: list[tuple[int, int]] = []  # (arrival ms, pictures so far)
        async with http.get(f"{prefix}/{number}.m4s") as response:
            assert response.status == 200, response.status
            async for piece in response.content.iter_any():
                data += piece
                whole = complete_chunks(data)
                if whole > counted_to:
                    arrived, counted_to = clock.now_ms(), whole
                    pictures = await asyncio.to_thread(_packets, init + data[:whole])
                    arrivals.append((arrived, pictures))
        frames = await asyncio.to_thread(_decode, init + data) if coded else []
        for arrived, pictures in arrivals:
            if not coded:
                captured = (number * config.segment_ms * config.frame_rate // 1000) + pictures - 1
                sent: int | None = epoch.start_ms + captured * 1000 // config.frame_rate
            elif 0 < pictures <= len(frames):
                sent = read_code(frames[pictures - 1], arrived)
            else:
                sent = None
            if sent is not None:
                latencies.append(arrived - sent)
    return latencies


async def ffprobe_frame_counts(mpd_url: str, seconds: int = 6) -> dict[int, int]:
    """Frames Debian's ffprobe decodes from each stream of the MPD in ``seconds`` of it."""
    process = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-read_intervals", f"%+{seconds}", "-count_frames",
        "-show_entries", "stream=index,codec_name,nb_read_frames", "-of", "json", mpd_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    streams = json.loads(out)["streams"]
    return {s["index"]: int(s.get("nb_read_frames", 0)) for s in streams}


if __name__ == "__main__":
    width, _, height = sys.argv[2].partition("x")
    if sys.argv[1] == "raw":
        _run_raw((int(width), int(height)))
    else:
        _run_whip((int(width), int(height)), *sys.argv[3:7])
