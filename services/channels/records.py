"""A channel's record (the Channel message) and the packager's configuration made from it.

The channels service validates a request's channel into both; the mirror remakes the
configuration from the stored record when Redis lost its copy.
"""

from __future__ import annotations

import time

from kernel.channel_config import (
    DEFAULT_AUDIO,
    DEFAULT_VIDEO_LADDER,
    AudioRung,
    ChannelConfig,
    VideoRung,
)
from kernel.rpc import validate
from kernel.rpc.errors import InvalidArgument
from livemesh.channels.v1 import channels_pb2 as pb

DEFAULT_TARGET_LATENCY_MS = 1500


def channel_config(channel_id: str, channel: pb.Channel) -> ChannelConfig:
    """The packager's config for ``channel``; INVALID_ARGUMENT naming the field when it is bad."""
    for i, rung in enumerate(channel.video_ladder):
        validate.resource_id(rung.name, f"channel.video_ladder[{i}].name")
        for attr in ("width", "height", "bitrate"):
            if getattr(rung, attr) <= 0:
                raise InvalidArgument(f"channel.video_ladder[{i}].{attr}", "must be positive")
    latency = channel.latency
    for attr in ("segment_ms", "chunk_ms", "window_s", "target_latency_ms"):
        if getattr(latency, attr) < 0:
            raise InvalidArgument(f"channel.latency.{attr}", "must not be negative")
    if channel.audio_bitrate < 0 or channel.frame_rate < 0:
        raise InvalidArgument(
            "channel.audio_bitrate" if channel.audio_bitrate < 0 else "channel.frame_rate",
            "must not be negative",
        )
    ladder = tuple(VideoRung(r.name, r.width, r.height, r.bitrate) for r in channel.video_ladder)
    try:
        return ChannelConfig(
            name=channel_id,
            video=ladder or DEFAULT_VIDEO_LADDER,
            audio=AudioRung(DEFAULT_AUDIO.name, channel.audio_bitrate or DEFAULT_AUDIO.bitrate),
            frame_rate=channel.frame_rate or 30,
            segment_ms=latency.segment_ms or 2000,
            chunk_ms=latency.chunk_ms or 200,
            window_s=latency.window_s or 60,
        )
    except ValueError as exc:  # the timing model's own checks (DESIGN.md §3)
        raise InvalidArgument("channel", str(exc)) from exc


def normalised(channel_id: str, channel: pb.Channel, config: ChannelConfig) -> pb.Channel:
    out = pb.Channel(
        name=f"channels/{channel_id}",
        display_name=validate.text(channel.display_name, "channel.display_name", 1, 100),
        audio_bitrate=config.audio.bitrate,
        frame_rate=config.frame_rate,
        state=pb.CHANNEL_STATE_IDLE,
    )
    out.video_ladder.extend(
        pb.VideoRung(name=r.name, width=r.width, height=r.height, bitrate=r.bitrate)
        for r in config.video
    )
    out.latency.CopyFrom(
        pb.LatencySettings(
            segment_ms=config.segment_ms,
            chunk_ms=config.chunk_ms,
            window_s=config.window_s,
            target_latency_ms=channel.latency.target_latency_ms or DEFAULT_TARGET_LATENCY_MS,
        )
    )
    out.create_time.FromNanoseconds(time.time_ns())
    return out
