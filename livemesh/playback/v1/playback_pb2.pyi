import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
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
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_PLAYING: SessionState
SESSION_STATE_PAUSED: SessionState
SESSION_STATE_BUFFERING: SessionState
SESSION_STATE_ENDED: SessionState

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
    __slots__ = ("name", "account", "profile", "content", "manifest_urls", "state", "position_ms", "heartbeat_interval_seconds", "token_expire_time", "start_time")
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
    def __init__(self, name: _Optional[str] = ..., account: _Optional[str] = ..., profile: _Optional[str] = ..., content: _Optional[str] = ..., manifest_urls: _Optional[_Iterable[_Union[ManifestUrl, _Mapping]]] = ..., state: _Optional[_Union[SessionState, str]] = ..., position_ms: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[int] = ..., token_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

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
