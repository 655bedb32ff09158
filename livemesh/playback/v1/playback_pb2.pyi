import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from livemesh.registry.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_PLAYING: _ClassVar[SessionState]
    SESSION_STATE_PAUSED: _ClassVar[SessionState]
    SESSION_STATE_BUFFERING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]

class QoeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QOE_STATE_UNSPECIFIED: _ClassVar[QoeState]
    QOE_STATE_HEALTHY: _ClassVar[QoeState]
    QOE_STATE_DEMOTED: _ClassVar[QoeState]
    QOE_STATE_PROBATION: _ClassVar[QoeState]
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_PLAYING: SessionState
SESSION_STATE_PAUSED: SessionState
SESSION_STATE_BUFFERING: SessionState
SESSION_STATE_ENDED: SessionState
QOE_STATE_UNSPECIFIED: QoeState
QOE_STATE_HEALTHY: QoeState
QOE_STATE_DEMOTED: QoeState
QOE_STATE_PROBATION: QoeState

class ManifestUrl(_message.Message):
    __slots__ = ("url", "instance", "region", "rank")
    URL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    url: str
    instance: str
    region: str
    rank: int
    def __init__(self, url: _Optional[str] = ..., instance: _Optional[str] = ..., region: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class PlaybackSession(_message.Message):
    __slots__ = ("name", "account", "profile", "content", "manifest_urls", "state", "position_ms", "heartbeat_interval_seconds", "token_expire_time", "start_time", "steered_manifest_url", "target_latency_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URLS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STEERED_MANIFEST_URL_FIELD_NUMBER: _ClassVar[int]
    TARGET_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    account: str
    profile: str
    content: str
    manifest_urls: _containers.RepeatedCompositeFieldContainer[ManifestUrl]
    state: SessionState
    position_ms: int
    heartbeat_interval_seconds: int
    token_expire_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    steered_manifest_url: str
    target_latency_ms: int
    def __init__(self, name: _Optional[str] = ..., account: _Optional[str] = ..., profile: _Optional[str] = ..., content: _Optional[str] = ..., manifest_urls: _Optional[_Iterable[_Union[ManifestUrl, _Mapping]]] = ..., state: _Optional[_Union[SessionState, str]] = ..., position_ms: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[int] = ..., token_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., steered_manifest_url: _Optional[str] = ..., target_latency_ms: _Optional[int] = ...) -> None: ...

class StartPlaybackRequest(_message.Message):
    __slots__ = ("content", "profile", "client_region", "max_urls", "request_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REGION_FIELD_NUMBER: _ClassVar[int]
    MAX_URLS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content: str
    profile: str
    client_region: str
    max_urls: int
    request_id: str
    def __init__(self, content: _Optional[str] = ..., profile: _Optional[str] = ..., client_region: _Optional[str] = ..., max_urls: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartPlaybackResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: PlaybackSession
    def __init__(self, session: _Optional[_Union[PlaybackSession, _Mapping]] = ...) -> None: ...

class HeartbeatPlaybackRequest(_message.Message):
    __slots__ = ("name", "position_ms", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    position_ms: int
    state: SessionState
    def __init__(self, name: _Optional[str] = ..., position_ms: _Optional[int] = ..., state: _Optional[_Union[SessionState, str]] = ...) -> None: ...

class HeartbeatPlaybackResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: PlaybackSession
    def __init__(self, session: _Optional[_Union[PlaybackSession, _Mapping]] = ...) -> None: ...

class StopPlaybackRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StopPlaybackResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: PlaybackSession
    def __init__(self, session: _Optional[_Union[PlaybackSession, _Mapping]] = ...) -> None: ...

class GetSteeringRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSteeringResponse(_message.Message):
    __slots__ = ("manifest_urls", "target_latency_ms")
    MANIFEST_URLS_FIELD_NUMBER: _ClassVar[int]
    TARGET_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    manifest_urls: _containers.RepeatedCompositeFieldContainer[ManifestUrl]
    target_latency_ms: int
    def __init__(self, manifest_urls: _Optional[_Iterable[_Union[ManifestUrl, _Mapping]]] = ..., target_latency_ms: _Optional[int] = ...) -> None: ...

class QoeWindow(_message.Message):
    __slots__ = ("start_time", "seconds", "requests", "score", "rebuffer_ratio", "startup_ms", "error_rate", "bitrate_kbps")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REBUFFER_RATIO_FIELD_NUMBER: _ClassVar[int]
    STARTUP_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    BITRATE_KBPS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    seconds: int
    requests: int
    score: float
    rebuffer_ratio: float
    startup_ms: float
    error_rate: float
    bitrate_kbps: float
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seconds: _Optional[int] = ..., requests: _Optional[int] = ..., score: _Optional[float] = ..., rebuffer_ratio: _Optional[float] = ..., startup_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., bitrate_kbps: _Optional[float] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("instance", "qoe_state", "qoe_windows")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    QOE_STATE_FIELD_NUMBER: _ClassVar[int]
    QOE_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    instance: _registry_pb2.Instance
    qoe_state: QoeState
    qoe_windows: _containers.RepeatedCompositeFieldContainer[QoeWindow]
    def __init__(self, instance: _Optional[_Union[_registry_pb2.Instance, _Mapping]] = ..., qoe_state: _Optional[_Union[QoeState, str]] = ..., qoe_windows: _Optional[_Iterable[_Union[QoeWindow, _Mapping]]] = ...) -> None: ...

class ListEdgesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEdgesResponse(_message.Message):
    __slots__ = ("edges",)
    EDGES_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    def __init__(self, edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ...) -> None: ...
