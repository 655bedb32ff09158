"""A channel's configuration record: the ABR ladder and the channel's timing settings.

The channels service is its one writer (``kernel.channel_config_store``); the
packager and ingest read it.  These are the *requested* settings: what the encoder
actually produced (codec strings, timescales) is published per epoch as
:class:`kernel.epoch.Representation`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from kernel.timeline import Timeline

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class VideoRung:
    name: str
    width: int
    height: int
    bitrate: int


@dataclass(frozen=True)
class AudioRung:
    name: str
    bitrate: int = 128_000
    sample_rate: int = 48_000
    channels: int = 2


DEFAULT_VIDEO_LADDER = (
    VideoRung("v720", 1280, 720, 2_500_000),
    VideoRung("v480", 854, 480, 1_200_000),
    VideoRung("v360", 640, 360, 600_000),
)
DEFAULT_AUDIO = AudioRung("a128")


@dataclass(frozen=True)
class ChannelConfig:
    """A live channel's encoding and timing settings."""

    name: str
    video: tuple[VideoRung, ...] = DEFAULT_VIDEO_LADDER
    audio: AudioRung = field(default=DEFAULT_AUDIO)
    frame_rate: int = 30
    segment_ms: int = 2000
    chunk_ms: int = 200
    window_s: int = 60

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject settings that would break the timing model (DESIGN.md §3)."""
        names = [r.name for r in self.video] + [self.audio.name]
        for name in [self.name, *names]:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"invalid name {name!r}: lowercase letters, digits, - and _")
        if len(set(names)) != len(names):
            raise ValueError("rendition names must be unique")
        if not self.video:
            raise ValueError("the ladder needs at least one video rung")
        for rung in self.video:
            if rung.width % 2 or rung.height % 2 or rung.width <= 0 or rung.height <= 0:
                raise ValueError(f"rung {rung.name}: width and height must be positive and even")
            if rung.bitrate <= 0:
                raise ValueError(f"rung {rung.name}: bitrate must be positive")
        Timeline(self.segment_ms, self.chunk_ms)  # raises on a bad pair
        if (self.chunk_ms * self.frame_rate) % 1000:
            raise ValueError("the chunk duration must hold a whole number of frames")
        if self.window_s * 1000 < 3 * self.segment_ms:
            raise ValueError("the live window must hold at least three segments")

    @property
    def timeline(self) -> Timeline:
        return Timeline(self.segment_ms, self.chunk_ms)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChannelConfig:
        raw = json.loads(text)
        return cls(
            name=raw["name"],
            video=tuple(VideoRung(**r) for r in raw["video"]),
            audio=AudioRung(**raw["audio"]),
            frame_rate=raw["frame_rate"],
            segment_ms=raw["segment_ms"],
            chunk_ms=raw["chunk_ms"],
            window_s=raw["window_s"],
        )
