"""The synthetic live source: a test pattern with a running UTC clock, and a tone.

Every frame shows the wall-clock time it was captured and its frame number, and
a marker sweeps across the picture once per segment, so latency (compare the
burnt-in clock with a real one) and continuity (a jump of the counter or the
marker) can be judged by eye.  A 1 kHz tone beeps at every second boundary, so
audio continuity and A/V sync can be heard against the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from typing import Protocol

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

AAC_FRAME_SAMPLES = 1024


class ChannelSource(Protocol):
    """Where a channel's pictures and sound come from, pulled on the channel's own clock.

    The channel asks for frame ``index`` when its capture time comes; a source
    fed by a broadcaster answers with its newest picture (or a slate), so input
    jitter, gaps and reconnects never disturb the output timeline.
    """

    def video_frame(self, index: int, captured_ms: int) -> av.VideoFrame:
        """The picture for output frame ``index``, in the ladder's top-rung size."""
        ...

    def audio_frame(self, index: int) -> av.AudioFrame:
        """AAC-sized audio frame ``index`` (samples ``index * 1024 ..``), planar float."""
        ...


BAR_COLOURS = (  # SMPTE-like bars, RGB
    (192, 192, 192),
    (192, 192, 0),
    (0, 192, 192),
    (0, 192, 0),
    (192, 0, 192),
    (192, 0, 0),
    (0, 0, 192),
)


def colour_bars(width: int, height: int) -> NDArray[np.uint8]:
    """An RGB picture of vertical colour bars."""
    picture = np.zeros((height, width, 3), np.uint8)
    edges = np.linspace(0, width, len(BAR_COLOURS) + 1).astype(int)
    for colour, left, right in zip(BAR_COLOURS, edges[:-1], edges[1:], strict=True):
        picture[:, left:right] = colour
    return picture


class TestPattern:
    """Renders video frames of the test pattern at a fixed size and frame rate.

    The background is converted to YUV 4:2:0 once; per frame only the caption
    (luma only) and the marker are drawn, so a 720p frame costs well under a
    millisecond of the real-time budget.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self, width: int = 1280, height: int = 720, frame_rate: int = 30, segment_frames: int = 60
    ) -> None:
        self.width, self.height, self.frame_rate = width, height, frame_rate
        self.segment_frames = segment_frames
        self._strip_top = (height - height // 6) & ~1
        rgb = colour_bars(width, height)
        rgb[self._strip_top :] = 16
        background = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        # shape (height * 3 / 2, width): the Y plane, then U and V
        self._background = np.asarray(background.to_ndarray(), dtype=np.uint8)
        self._font = ImageFont.load_default(size=max(12, height // 14))

    def frame(self, index: int, captured_ms: int) -> av.VideoFrame:
        """Frame ``index``, stamped with the wall-clock time it was captured."""
        planes = self._background.copy()
        planes[self._strip_top : self.height] = self._caption(index, captured_ms)
        self._draw_marker(planes, index)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = index
        frame.time_base = Fraction(1, self.frame_rate)
        return frame

    def _caption(self, index: int, captured_ms: int) -> NDArray[np.uint8]:
        stamp = datetime.fromtimestamp(captured_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
        strip = Image.new("L", (self.width, self.height - self._strip_top), 16)
        ImageDraw.Draw(strip).text(
            (self.width // 40, (self.height - self._strip_top) // 6),
            f"{stamp} UTC   #{index:07d}",
            font=self._font,
            fill=235,
        )
        return np.asarray(strip, dtype=np.uint8)

    def _draw_marker(self, planes: NDArray[np.uint8], index: int) -> None:
        """A white square sweeping left to right once per segment (luma plane only)."""
        size = self.height // 12
        travel = self.width - size
        left = travel * (index % self.segment_frames) // max(1, self.segment_frames - 1)
        top = self.height // 8
        planes[top : top + size, left : left + size] = 235


class Tone:
    """Stereo AAC-sized audio frames: a quiet hum with a beep on every second boundary."""

    def __init__(self, sample_rate: int = 48_000, channels: int = 2) -> None:
        self.sample_rate, self.channels = sample_rate, channels

    def frame(self, index: int) -> av.AudioFrame:
        """Audio frame ``index`` (samples ``index*1024 ..``), planar float."""
        first = index * AAC_FRAME_SAMPLES
        t = (first + np.arange(AAC_FRAME_SAMPLES)) / self.sample_rate
        beeping = (t % 1.0) < 0.1
        wave = np.where(
            beeping, 0.3 * np.sin(2 * np.pi * 1000 * t), 0.05 * np.sin(2 * np.pi * 220 * t)
        )
        planes = np.tile(wave.astype(np.float32), (self.channels, 1))
        layout = "stereo" if self.channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
        frame.sample_rate = self.sample_rate
        frame.pts = first
        frame.time_base = Fraction(1, self.sample_rate)
        return frame


class SyntheticSource:
    """The test pattern and the tone, as a :class:`ChannelSource`."""

    def __init__(self, pattern: TestPattern, tone: Tone) -> None:
        self.pattern, self.tone = pattern, tone

    def video_frame(self, index: int, captured_ms: int) -> av.VideoFrame:
        return self.pattern.frame(index, captured_ms)

    def audio_frame(self, index: int) -> av.AudioFrame:
        return self.tone.frame(index)
