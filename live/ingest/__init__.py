"""Broadcaster ingest (WHIP over WebRTC, RTMP) feeding a channel's ladder encoder.

An ingest session is a :class:`live.source.ChannelSource`: the channel keeps
pulling frames on its own clock, and :class:`IngestSource` answers with the
broadcaster's newest picture and sound, or with a slate while nobody publishes.
"""

from live.ingest.ingest_source import ChannelBusy, ChannelEnded, IngestFeed, IngestSource
from live.ingest.keys import RedisStreamKeys, StreamKeys

__all__ = [
    "ChannelBusy",
    "ChannelEnded",
    "IngestFeed",
    "IngestSource",
    "RedisStreamKeys",
    "StreamKeys",
]
