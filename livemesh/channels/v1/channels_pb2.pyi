import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChannelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_STATE_UNSPECIFIED: _ClassVar[ChannelState]
    CHANNEL_STATE_IDLE: _ClassVar[ChannelState]
    CHANNEL_STATE_LIVE: _ClassVar[ChannelState]
    CHANNEL_STATE_ENDED: _ClassVar[ChannelState]
CHANNEL_STATE_UNSPECIFIED: ChannelState
CHANNEL_STATE_IDLE: ChannelState
CHANNEL_STATE_LIVE: ChannelState
CHANNEL_STATE_ENDED: ChannelState

class VideoRung(_message.Message):
    __slots__ = ("name", "width", "height", "bitrate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BITRATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    height: int
    bitrate: int
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bitrate: _Optional[int] = ...) -> None: ...

class LatencySettings(_message.Message):
    __slots__ = ("segment_ms", "chunk_ms", "window_s", "target_latency_ms")
    SEGMENT_MS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    segment_ms: int
    chunk_ms: int
    window_s: int
    target_latency_ms: int
    def __init__(self, segment_ms: _Optional[int] = ..., chunk_ms: _Optional[int] = ..., window_s: _Optional[int] = ..., target_latency_ms: _Optional[int] = ...) -> None: ...

class LiveStatus(_message.Message):
    __slots__ = ("epoch", "epoch_start_time", "live_segment", "live_chunk", "representations", "ingest")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_START_TIME_FIELD_NUMBER: _ClassVar[int]
    LIVE_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    LIVE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATIONS_FIELD_NUMBER: _ClassVar[int]
    INGEST_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    epoch_start_time: _timestamp_pb2.Timestamp
    live_segment: int
    live_chunk: int
    representations: _containers.RepeatedScalarFieldContainer[str]
    ingest: IngestStatus
    def __init__(self, epoch: _Optional[str] = ..., epoch_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live_segment: _Optional[int] = ..., live_chunk: _Optional[int] = ..., representations: _Optional[_Iterable[str]] = ..., ingest: _Optional[_Union[IngestStatus, _Mapping]] = ...) -> None: ...

class IngestStatus(_message.Message):
    __slots__ = ("primary", "backup", "refused_backup")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BACKUP_FIELD_NUMBER: _ClassVar[int]
    primary: str
    backup: str
    refused_backup: str
    def __init__(self, primary: _Optional[str] = ..., backup: _Optional[str] = ..., refused_backup: _Optional[str] = ...) -> None: ...

class Channel(_message.Message):
    __slots__ = ("name", "display_name", "video_ladder", "audio_bitrate", "frame_rate", "latency", "state", "live_status", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_LADDER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_BITRATE_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    video_ladder: _containers.RepeatedCompositeFieldContainer[VideoRung]
    audio_bitrate: int
    frame_rate: int
    latency: LatencySettings
    state: ChannelState
    live_status: LiveStatus
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., video_ladder: _Optional[_Iterable[_Union[VideoRung, _Mapping]]] = ..., audio_bitrate: _Optional[int] = ..., frame_rate: _Optional[int] = ..., latency: _Optional[_Union[LatencySettings, _Mapping]] = ..., state: _Optional[_Union[ChannelState, str]] = ..., live_status: _Optional[_Union[LiveStatus, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateChannelRequest(_message.Message):
    __slots__ = ("channel_id", "channel", "request_id")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    channel: Channel
    request_id: str
    def __init__(self, channel_id: _Optional[str] = ..., channel: _Optional[_Union[Channel, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateChannelResponse(_message.Message):
    __slots__ = ("channel", "stream_key")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STREAM_KEY_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    stream_key: str
    def __init__(self, channel: _Optional[_Union[Channel, _Mapping]] = ..., stream_key: _Optional[str] = ...) -> None: ...

class GetChannelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetChannelResponse(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    def __init__(self, channel: _Optional[_Union[Channel, _Mapping]] = ...) -> None: ...

class ListChannelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListChannelsResponse(_message.Message):
    __slots__ = ("channels", "next_page_token")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[Channel]
    next_page_token: str
    def __init__(self, channels: _Optional[_Iterable[_Union[Channel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EndChannelRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class EndChannelResponse(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    def __init__(self, channel: _Optional[_Union[Channel, _Mapping]] = ...) -> None: ...

class RotateStreamKeyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateStreamKeyResponse(_message.Message):
    __slots__ = ("stream_key",)
    STREAM_KEY_FIELD_NUMBER: _ClassVar[int]
    stream_key: str
    def __init__(self, stream_key: _Optional[str] = ...) -> None: ...

class CheckStreamKeyRequest(_message.Message):
    __slots__ = ("stream_key",)
    STREAM_KEY_FIELD_NUMBER: _ClassVar[int]
    stream_key: str
    def __init__(self, stream_key: _Optional[str] = ...) -> None: ...

class CheckStreamKeyResponse(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...
