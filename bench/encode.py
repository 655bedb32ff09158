"""Benchmark: the default ABR ladder encoded by livemesh vs FFmpeg's own LL-DASH packager.

Both encode the same lavfi source (``testsrc2`` 720p30 + a 1 kHz ``sine``) into
the same ladder (720p 2.5 Mb/s, 480p 1.2 Mb/s, 360p 0.6 Mb/s, AAC 128 kb/s) with
libx264 ``veryfast``/``zerolatency``, keyframes every segment, as fast as they can:

- livemesh: PyAV decode of the lavfi source -> :class:`live.encode` encoders ->
  :class:`live.package.ChunkPackager` (CMAF chunks in memory, no Redis);
- baseline: ``ffmpeg -f dash -ldash 1 -streaming 1`` writing to a temp directory.

Figures: real-time factor (media seconds per wall second) and CPU seconds per
media second.  Targets (DESIGN.md §7): >= 2x real time; CPU ratio <= 1.1.
Run: ``python bench/encode.py [--quick] [--seconds N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.channel_config import DEFAULT_AUDIO, DEFAULT_VIDEO_LADDER
from live.encode import AudioEncoder, RenditionEncoder, VideoEncoder
from live.package import ChunkPackager
from live.timing import Timeline, UnitClock

FPS = 30
SEGMENT_S = 2
VIDEO_SOURCE = f"testsrc2=size=1280x720:rate={FPS}"
AUDIO_SOURCE = "sine=frequency=1000:sample_rate=48000"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_livemesh(seconds: int) -> tuple[float, float, int]:
    """Encode ``seconds`` of the source; returns wall s, CPU s and bytes of chunks made."""
    timeline = Timeline(SEGMENT_S * 1000, 200)
    encoders: list[RenditionEncoder] = [
        VideoEncoder(r, FPS, SEGMENT_S * FPS) for r in DEFAULT_VIDEO_LADDER
    ]
    audio = AudioEncoder(DEFAULT_AUDIO)
    packagers = {
        id(e): ChunkPackager(
            UnitClock(timeline, e.units_per_second), e.track, e.unit_duration, start_ms=0
        )
        for e in [*encoders, audio]
    }
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
    produced, audio_in = 0, 0
    cpu0, wall0 = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
    with (
        av.open(VIDEO_SOURCE, format="lavfi") as vsrc,
        av.open(AUDIO_SOURCE, format="lavfi") as asrc,
    ):
        audio_frames = (f for frame in asrc.decode(audio=0) for f in resampler.resample(frame))
        for index, frame in enumerate(vsrc.decode(video=0)):
            if index >= seconds * FPS:
                break
            frame.pts = index
            for encoder in encoders:
                for unit in encoder.encode(frame, keyframe=index % (SEGMENT_S * FPS) == 0):
                    produced += sum(len(c.data) for c in packagers[id(encoder)].add(unit))
            while audio_in * 1024 * FPS < (index + 1) * 48000:
                audio_in += 1
                for unit in audio.encode(next(audio_frames)):
                    produced += sum(len(c.data) for c in packagers[id(audio)].add(unit))
    return time.perf_counter() - wall0, cpu_seconds(resource.RUSAGE_SELF) - cpu0, produced


def run_ffmpeg(seconds: int) -> tuple[float, float]:
    """The same ladder through ``ffmpeg -f dash -ldash 1``; returns wall s and CPU s."""
    scale = ";".join(
        f"[v{i}]scale={r.width}:{r.height}[o{i}]" for i, r in enumerate(DEFAULT_VIDEO_LADDER)
    )
    split = f"[0:v]split={len(DEFAULT_VIDEO_LADDER)}" + "".join(
        f"[v{i}]" for i in range(len(DEFAULT_VIDEO_LADDER))
    )
    bitrates = [
        arg
        for i, r in enumerate(DEFAULT_VIDEO_LADDER)
        for arg in (f"-b:v:{i}", str(r.bitrate), f"-maxrate:v:{i}", str(r.bitrate))
    ]
    maps = [arg for i in range(len(DEFAULT_VIDEO_LADDER)) for arg in ("-map", f"[o{i}]")]
    with tempfile.TemporaryDirectory() as out:
        command = [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", VIDEO_SOURCE, "-f", "lavfi", "-i", AUDIO_SOURCE,
            "-t", str(seconds), "-filter_complex", f"{split};{scale}",
            *maps, "-map", "1:a",
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-g", str(SEGMENT_S * FPS), "-keyint_min", str(SEGMENT_S * FPS), "-sc_threshold", "0",
            *bitrates, "-bufsize", "2500k",
            "-c:a", "aac", "-b:a", str(DEFAULT_AUDIO.bitrate), "-ac", "2",
            "-f", "dash", "-ldash", "1", "-streaming", "1", "-seg_duration", str(SEGMENT_S),
            "-frag_duration", "0.2", "-frag_type", "duration", "-use_template", "1",
            "-use_timeline", "0", f"{out}/manifest.mpd",
        ]  # fmt: skip
        cpu0, wall0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(command, check=True)
        return time.perf_counter() - wall0, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of media instead of 60 s")
    parser.add_argument("--seconds", type=int)
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 60)

    ff_wall, ff_cpu = run_ffmpeg(seconds)
    lm_wall, lm_cpu, produced = run_livemesh(seconds)
    result = {
        "media_seconds": seconds,
        "livemesh_realtime_factor": round(seconds / lm_wall, 2),
        "livemesh_cpu_per_media_s": round(lm_cpu / seconds, 3),
        "baseline_ffmpeg_realtime_factor": round(seconds / ff_wall, 2),
        "baseline_ffmpeg_cpu_per_media_s": round(ff_cpu / seconds, 3),
        "cpu_ratio": round(lm_cpu / ff_cpu, 3),
        "realtime_ratio": round(ff_wall / lm_wall, 3),
        "livemesh_output_mbit_per_s": round(produced * 8 / seconds / 1e6, 2),
    }
    print(f"media: {seconds} s of 720p30 + AAC, ladder 720p/480p/360p + audio")
    print(
        f"livemesh : {result['livemesh_realtime_factor']:>6}x real time, "
        f"{result['livemesh_cpu_per_media_s']} CPU-s per media s"
    )
    print(
        f"ffmpeg   : {result['baseline_ffmpeg_realtime_factor']:>6}x real time, "
        f"{result['baseline_ffmpeg_cpu_per_media_s']} CPU-s per media s (-f dash -ldash 1)"
    )
    print(f"CPU ratio livemesh/ffmpeg: {result['cpu_ratio']} (target <= 1.1)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
