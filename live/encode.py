"""Real-time ABR encoding with PyAV: one encoder per rendition of the ladder.

Each rendition gets FFmpeg's mp4 muxer only to write its CMAF init segment
(``ftyp`` + ``moov`` with ``mvex``); the encoded access units are handed to the
packager, which cuts them into chunks on the timing grid.  Video keyframes are
forced by the caller at every segment start (x264's own GOP logic and scene-cut
detection are switched off), so segments align across the ladder.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter

from live.cmaf import InitInfo, read_avc_codec, read_init
from live.ladder import AudioRung, VideoRung
from live.source import AAC_FRAME_SAMPLES
from live.state import Representation

CMAF_INIT_MOVFLAGS = "empty_moov+default_base_moof+cmaf"
X264_PRESET = "veryfast"


@dataclass(frozen=True)
class EncodedUnit:
    """One encoded access unit, numbered on its track's unit clock."""

    index: int
    data: bytes
    sync: bool


class RenditionEncoder(ABC):
    """Encodes frames of one rendition; knows its init segment and how it is published."""

    representation: Representation
    init_segment: bytes
    track: InitInfo
    units_per_second: Fraction

    @property
    def unit_duration(self) -> int:
        """Duration of one access unit in the track's timescale."""
        return int(self.track.timescale / self.units_per_second)

    @abstractmethod
    def encode(
        self, frame: av.VideoFrame | av.AudioFrame, keyframe: bool = False
    ) -> list[EncodedUnit]:
        """Encode one frame; returns the access units that came out (zero or more)."""

    def _write_init(self, container: av.container.OutputContainer, sink: io.BytesIO) -> None:
        """Open the encoder and let FFmpeg's mp4 muxer write the CMAF header: our init segment."""
        container.start_encoding()
        self.init_segment = sink.getvalue()
        self.track = read_init(self.init_segment)

    def _units(self, packets: list[av.Packet]) -> list[EncodedUnit]:
        return [self._unit(p) for p in packets]

    @abstractmethod
    def _unit(self, packet: av.Packet) -> EncodedUnit: ...


class VideoEncoder(RenditionEncoder):
    """libx264, zerolatency: one packet out per frame in, no B-frames, no lookahead."""

    def __init__(self, rung: VideoRung, frame_rate: int, segment_frames: int) -> None:
        self.rung = rung
        self.units_per_second = Fraction(frame_rate)
        # one scaler per rung keeps its SwsContext; frame.reformat() would build one a frame
        self._scaler = VideoReformatter()
        sink = io.BytesIO()
        container = av.open(sink, "w", format="mp4", options={"movflags": CMAF_INIT_MOVFLAGS})
        stream = container.add_stream("libx264", rate=frame_rate)
        stream.width, stream.height, stream.pix_fmt = rung.width, rung.height, "yuv420p"
        stream.bit_rate = rung.bitrate
        stream.options = {
            "preset": X264_PRESET,
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": (
                f"keyint={segment_frames}:min-keyint={segment_frames}:scenecut=0:"
                f"vbv-maxrate={rung.bitrate // 1000}:vbv-bufsize={rung.bitrate // 1000}"
            ),
        }
        self._write_init(container, sink)
        self._stream = stream
        self._container = container
        self.representation = Representation(
            id=rung.name,
            kind="video",
            codecs=read_avc_codec(self.init_segment),
            bandwidth=rung.bitrate,
            timescale=self.track.timescale,
            width=rung.width,
            height=rung.height,
            frame_rate=frame_rate,
        )

    def encode(
        self, frame: av.VideoFrame | av.AudioFrame, keyframe: bool = False
    ) -> list[EncodedUnit]:
        assert isinstance(frame, av.VideoFrame)
        scaled = frame
        if (frame.width, frame.height) != (self.rung.width, self.rung.height):
            scaled = self._scaler.reformat(
                frame, width=self.rung.width, height=self.rung.height, format="yuv420p"
            )
            scaled.pts, scaled.time_base = frame.pts, frame.time_base
        scaled.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        return self._units(self._stream.encode(scaled))

    def _unit(self, packet: av.Packet) -> EncodedUnit:
        return EncodedUnit(
            index=int(packet.pts or 0), data=annexb_to_avcc(bytes(packet)), sync=packet.is_keyframe
        )


class AudioEncoder(RenditionEncoder):
    """FFmpeg's AAC-LC encoder on 1024-sample frames.

    The encoder's priming frame is published as the first access unit, so audio
    starts one AAC frame (21 ms) late: within the one-frame A/V budget.
    """

    def __init__(self, rung: AudioRung) -> None:
        self.rung = rung
        self.units_per_second = Fraction(rung.sample_rate, AAC_FRAME_SAMPLES)
        sink = io.BytesIO()
        container = av.open(sink, "w", format="mp4", options={"movflags": CMAF_INIT_MOVFLAGS})
        stream = container.add_stream("aac", rate=rung.sample_rate)
        stream.layout = "stereo" if rung.channels == 2 else "mono"
        stream.bit_rate = rung.bitrate
        self._write_init(container, sink)
        self._stream = stream
        self._container = container
        self.representation = Representation(
            id=rung.name,
            kind="audio",
            codecs="mp4a.40.2",
            bandwidth=rung.bitrate,
            timescale=self.track.timescale,
            sample_rate=rung.sample_rate,
            channels=rung.channels,
        )

    def encode(
        self, frame: av.VideoFrame | av.AudioFrame, keyframe: bool = False
    ) -> list[EncodedUnit]:
        assert isinstance(frame, av.AudioFrame)
        return self._units(self._stream.encode(frame))

    def _unit(self, packet: av.Packet) -> EncodedUnit:
        first_sample = int(packet.pts or 0) + AAC_FRAME_SAMPLES  # undo the priming shift
        return EncodedUnit(index=first_sample // AAC_FRAME_SAMPLES, data=bytes(packet), sync=True)


ANNEXB_START_CODE = re.compile(b"\x00\x00\x01")


def annexb_to_avcc(data: bytes) -> bytes:
    """Rewrite an H.264 access unit from start codes to 4-byte length prefixes.

    libx264 emits Annex B; an MP4 sample carries length-prefixed NAL units.  FFmpeg
    converts inside its mp4 muxer, which livemesh bypasses for media fragments, and
    it has no bitstream filter in this direction, so the split is done here.
    """
    nal_units = (n.rstrip(b"\x00") for n in ANNEXB_START_CODE.split(data))
    return b"".join(len(n).to_bytes(4, "big") + n for n in nal_units if n)
