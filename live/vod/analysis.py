"""Per-title analysis: trial-encode a title over a (resolution, CRF) grid and score it.

Each trial is encoded with x264 in memory, decoded, scaled back to the source's
resolution and scored against the source with FFmpeg's ``xpsnr`` filter (XPSNR:
PSNR weighted by local visual activity, which tracks perceived quality better than
PSNR).  VMAF would be the usual choice, but no maintained VMAF build installs here
(PyAV's FFmpeg has no ``libvmaf``), so quality is XPSNR of luma in dB.

The source is scored at its own resolution: a rung can never show more than the
source has, so the source is the display reference for every rung.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
from av.frame import Frame
from av.video.frame import VideoFrame

from live.vod.hull import GOOD_ENOUGH_DB, MAX_KBPS, Probe

CRFS = (17, 23, 29, 35)
WINDOWS = 5  # stretches sampled from a title longer than the analysis budget
CRF_STEP = 6
MIN_CRF = 5
# rung heights as fractions of the source height (720p: 720, 540, 360, 270)
SCALES = (1.0, 0.75, 0.5, 0.375)
MIN_HEIGHT = 72
IDENTICAL_DB = 100.0  # xpsnr says "inf" for identical frames; count them as this
PROBE_PRESET = "veryfast"

Progress = Callable[[int, int], None]  # (done, total)


class BadMedia(Exception):
    """The input is not a readable video (corrupt, truncated, no video stream)."""


@dataclass(frozen=True)
class Clip:
    """Decoded source frames (yuv420p, source resolution) and their frame rate."""

    frames: list[VideoFrame]
    rate: Fraction
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return len(self.frames) / float(self.rate)


def _window(
    container: av.container.InputContainer, stream: av.VideoStream, start_s: float, limit: int
) -> list[VideoFrame]:
    """Up to ``limit`` frames from ``start_s`` on (seeking to the keyframe before it)."""
    if start_s > 0 and stream.time_base is not None:
        container.seek(int(start_s / stream.time_base), stream=stream)
    frames: list[VideoFrame] = []
    for frame in container.decode(stream):
        if frame.time is not None and frame.time < start_s:
            continue  # between the keyframe the seek found and the window's start
        frames.append(frame.reformat(format="yuv420p"))
        if len(frames) >= limit:
            break
    return frames


def rung_size(source_w: int, source_h: int, target_h: float) -> tuple[int, int]:
    """The (width, height) nearest ``target_h`` tall with exactly the source's shape.

    Both even (4:2:0), and with no rounding of the aspect ratio: the DASH muxer
    refuses renditions of different display aspects in one adaptation set, and a
    rounded width would stretch the picture.  With the aspect reduced to a:b, the
    sizes are the multiples of (2a, 2b).
    """
    g = math.gcd(source_w, source_h)
    a, b = source_w // g, source_h // g
    k = max(1, min(round(target_h / (2 * b)), source_h // (2 * b)))
    return 2 * a * k, 2 * b * k


def read_clip(path: str, max_seconds: float, windows: int = WINDOWS) -> Clip:
    """``max_seconds`` of the first video stream; :class:`BadMedia` if unreadable.

    A title longer than that is sampled in ``windows`` stretches spread evenly over its
    length (their middles at 1/2w, 3/2w, ... of it), so the ladder fits the whole title
    and not just its opening; a shorter one is read whole.
    """
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise BadMedia(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
            duration = float(container.duration or 0) / av.time_base
            if duration <= max_seconds:
                starts, span = [0.0], max_seconds
            else:
                span = max_seconds / windows
                starts = [duration * (i + 0.5) / windows - span / 2 for i in range(windows)]
            limit = max(1, int(span * rate))
            frames = [f for s in starts for f in _window(container, stream, s, limit)]
    except av.FFmpegError as error:
        raise BadMedia(f"{path}: not a readable video ({error})") from None
    if not frames:
        raise BadMedia(f"{path}: no decodable video frames")
    width, height = rung_size(frames[0].width, frames[0].height, frames[0].height)
    return Clip([f.reformat(width=width, height=height) for f in frames], rate, width, height)


def grid_heights(clip: Clip) -> list[int]:
    """Trial heights for a source: fixed fractions of it, never below :data:`MIN_HEIGHT`."""
    heights = {rung_size(clip.width, clip.height, clip.height * s)[1] for s in SCALES}
    return sorted((h for h in heights if h >= MIN_HEIGHT), reverse=True) or [clip.height]


def encode(clip: Clip, height: int, options: dict[str, str]) -> list[av.Packet]:
    """The clip scaled to ``height`` and encoded with x264 and ``options``, in memory."""
    width = rung_size(clip.width, clip.height, height)[0]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1) / clip.rate
    ctx.framerate = clip.rate
    ctx.options = {"preset": PROBE_PRESET, **options}
    packets: list[av.Packet] = []
    for index, frame in enumerate(clip.frames):
        scaled = frame.reformat(width=width, height=height, interpolation="BICUBIC")
        scaled.pts, scaled.time_base = index, ctx.time_base
        packets += ctx.encode(scaled)
    packets += ctx.encode(None)
    return packets


def decode(packets: Iterable[av.Packet], width: int, height: int) -> list[VideoFrame]:
    """Decoded H.264 packets, scaled to ``width`` x ``height`` for scoring."""
    ctx = av.CodecContext.create("h264", "r")
    frames = [f for packet in packets for f in ctx.decode(packet)] + list(ctx.decode(None))
    return [
        f.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
        for f in frames
    ]


def xpsnr(reference: Sequence[VideoFrame], distorted: Sequence[VideoFrame]) -> float:
    """Mean luma XPSNR (dB) of ``distorted`` against ``reference``, frame by frame."""
    first = reference[0]
    graph = av.filter.Graph()
    ref_in, dist_in = (
        graph.add_buffer(
            width=first.width, height=first.height, format=first.format, time_base=Fraction(1, 1000)
        )
        for _ in range(2)
    )
    scorer, sink = graph.add("xpsnr"), graph.add("buffersink")
    dist_in.link_to(scorer, 0, 0)
    ref_in.link_to(scorer, 0, 1)
    scorer.link_to(sink)
    graph.configure()
    scores: list[float] = []
    for index, (ref, dist) in enumerate(zip(reference, distorted, strict=False)):
        for source, frame in ((ref_in, ref), (dist_in, dist)):
            frame.pts, frame.time_base = index, Fraction(1, 1000)
            source.push(frame)
        scores += _pull_scores(sink)
    ref_in.push(None)
    dist_in.push(None)
    scores += _pull_scores(sink)
    if not scores:
        raise BadMedia("no frames to score")
    return sum(scores) / len(scores)


def drain(sink: av.filter.FilterContext) -> list[Frame]:
    """The frames a filter graph's ``sink`` has ready now (it may hold some back)."""
    frames: list[Frame] = []
    while True:
        try:
            frames.append(sink.pull())
        except (av.BlockingIOError, av.EOFError):
            return frames


def _pull_scores(sink: av.filter.FilterContext) -> list[float]:
    scores: list[float] = []
    for frame in drain(sink):
        value = frame.metadata.get("lavfi.xpsnr.xpsnr.y")
        if value is not None:
            score = float(value)
            scores.append(IDENTICAL_DB if math.isinf(score) else min(score, IDENTICAL_DB))
    return scores


def trial(clip: Clip, height: int, options: dict[str, str]) -> tuple[float, float]:
    """``(kbps, quality)`` of the clip encoded at ``height`` with ``options``."""
    packets = encode(clip, height, options)
    kbps = sum(p.size for p in packets) * 8 / clip.seconds / 1000
    return kbps, xpsnr(clip.frames, decode(packets, clip.width, clip.height))


def analyse(
    clip: Clip, crfs: Sequence[int] = CRFS, progress: Progress | None = None
) -> list[Probe]:
    """Every grid point of the clip as a scored :class:`Probe`, extended upwards if needed.

    When even the best grid point falls short of good-enough quality while still under
    the bitrate cap (small or easy sources), the full-resolution column is extended to
    lower CRFs until it gets there: otherwise the ladder's top rung would stop short
    of the quality a viewer could have had for few bits.
    """
    heights = grid_heights(clip)
    grid = [(h, crf) for h in heights for crf in crfs]
    probes = []

    def probe(height: int, crf: int) -> Probe:
        kbps, quality = trial(clip, height, {"crf": str(crf)})
        probes.append(Probe(height=height, crf=crf, kbps=kbps, quality=quality))
        if progress is not None:
            progress(len(probes), max(len(grid), len(probes)))
        return probes[-1]

    for height, crf in grid:
        probe(height, crf)
    best = max(probes, key=lambda p: p.quality)
    crf = min(crfs) - CRF_STEP
    while best.quality < GOOD_ENOUGH_DB and best.kbps < MAX_KBPS and crf >= MIN_CRF:
        best = probe(heights[0], crf)
        crf -= CRF_STEP
    return probes
