"""Encode a title's ladder and package it as on-demand CMAF DASH in a directory.

FFmpeg's ``dash`` muxer (through PyAV) writes what a static presentation needs: a
``type="static"`` MPD with one ``SegmentTemplate`` per rendition, an init segment and
numbered fragmented-MP4 media segments per rendition, all aligned because every
rung has its keyframes at the same times (GOP = segment duration, no scene-cut
keyframes).  Each rung is x264 at its hull CRF, capped by a VBV budget derived from
the probe's bitrate so a player's bandwidth estimate means something.

Audio, when the source has it, is one AAC-LC stereo rendition in its own adaptation
set.  The whole file is decoded once and fed to every rung; a file that stops decoding
well before its declared duration is refused as truncated rather than published short.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from live.vod.analysis import BadMedia, Progress, rung_size
from live.vod.hull import Probe

SEGMENT_S = 2
MANIFEST = "manifest.mpd"
LADDER_PRESET = "veryfast"
VBV_PEAK = 1.5  # maxrate over the probe's mean bitrate
TRUNCATION_SLACK_S = 1.0
AUDIO_RATE = 48_000
AUDIO_BPS = 128_000


def gop_params(gop: int) -> str:
    """x264's parameters for a keyframe every ``gop`` frames and nowhere else: every
    rendition's segments start at the same times."""
    return f"keyint={gop}:min-keyint={gop}:scenecut=0"


def rung_options(rung: Probe, gop: int) -> dict[str, object]:
    peak = max(1, round(rung.kbps * VBV_PEAK))
    return {
        "preset": LADDER_PRESET,
        "crf": str(rung.crf),
        "x264-params": f"{gop_params(gop)}:vbv-maxrate={peak}:vbv-bufsize={2 * peak}",
    }


def package(source: str, rungs: Sequence[Probe], out_dir: Path, progress: Progress | None) -> None:
    """Write ``manifest.mpd``, init and media segments of every rung into ``out_dir``."""
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise BadMedia(f"{source}: no video stream")
            _encode(container, rungs, out_dir, progress)
    except av.FFmpegError as error:
        raise BadMedia(f"{source}: decoding failed ({error})") from None


def _encode(
    container: av.container.InputContainer,
    rungs: Sequence[Probe],
    out_dir: Path,
    progress: Progress | None,
) -> None:
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    rate = Fraction(video.average_rate or video.guessed_rate or 25)
    declared = float(container.duration or 0) / av.time_base
    total = max(1, int(declared * rate))
    out_dir.mkdir(parents=True, exist_ok=True)
    with _open_output(out_dir, audio is not None) as output:
        outs = [_video_output(output, video, rung, rate) for rung in rungs]
        sound = _AudioRung(output) if audio is not None else None
        count = 0
        for packet in container.demux(*(s for s in (video, audio) if s is not None)):
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame) and sound is not None:
                    sound.encode(frame)
                if not isinstance(frame, av.VideoFrame):
                    continue
                for out in outs:
                    scaled = frame.reformat(
                        width=out.width,
                        height=out.height,
                        format="yuv420p",
                        interpolation="BICUBIC",
                    )
                    scaled.pts, scaled.time_base = count, Fraction(1) / rate
                    output.mux(out.encode(scaled))
                count += 1
                if progress is not None and count % 10 == 0:
                    progress(min(count, total), total)
        for out in outs:
            output.mux(out.encode(None))
        if sound is not None:
            sound.encode(None)
    if count == 0 or (declared and count / float(rate) < declared - TRUNCATION_SLACK_S):
        raise BadMedia(f"truncated: {count / float(rate):.1f} s of {declared:.1f} s decode")
    if progress is not None:
        progress(total, total)


def _open_output(out_dir: Path, with_audio: bool) -> av.container.OutputContainer:
    """The DASH muxer: video rungs in one adaptation set, the audio in another."""
    sets = "id=0,streams=v id=1,streams=a" if with_audio else "id=0,streams=v"
    return av.open(
        str(out_dir / MANIFEST),
        "w",
        format="dash",
        options={
            "seg_duration": str(SEGMENT_S),
            "use_template": "1",
            "use_timeline": "0",
            "init_seg_name": "init-$RepresentationID$.mp4",
            "media_seg_name": "$RepresentationID$-$Number$.m4s",
            "adaptation_sets": sets,
        },
    )


def _video_output(
    output: av.container.OutputContainer, source: av.VideoStream, rung: Probe, rate: Fraction
) -> av.VideoStream:
    out = output.add_stream("libx264", rate=rate)
    out.width, out.height = rung_size(
        source.codec_context.width, source.codec_context.height, rung.height
    )
    out.pix_fmt = "yuv420p"
    out.options = rung_options(rung, int(SEGMENT_S * rate))
    return out


class _AudioRung:
    """The one audio rendition: AAC-LC stereo 48 kHz, resampled from whatever the source has."""

    def __init__(self, output: av.container.OutputContainer) -> None:
        self.output = output
        self.stream = output.add_stream("aac", rate=AUDIO_RATE)
        self.stream.layout = "stereo"
        self.stream.bit_rate = AUDIO_BPS
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)

    def encode(self, frame: av.AudioFrame | None) -> None:
        for resampled in self.resampler.resample(frame):
            self.output.mux(self.stream.encode(resampled))
        if frame is None:
            self.output.mux(self.stream.encode(None))
