import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TitleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TITLE_KIND_UNSPECIFIED: _ClassVar[TitleKind]
    TITLE_KIND_MOVIE: _ClassVar[TitleKind]
    TITLE_KIND_SERIES: _ClassVar[TitleKind]
    TITLE_KIND_SEASON: _ClassVar[TitleKind]
    TITLE_KIND_EPISODE: _ClassVar[TitleKind]
    TITLE_KIND_LIVE_EVENT: _ClassVar[TitleKind]

class VodPublicationStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOD_PUBLICATION_STAGE_UNSPECIFIED: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_QUEUED: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_FETCH: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_ANALYSIS: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_ENCODE: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_UPLOAD: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_CATALOG: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_DONE: _ClassVar[VodPublicationStage]
    VOD_PUBLICATION_STAGE_FAILED: _ClassVar[VodPublicationStage]
TITLE_KIND_UNSPECIFIED: TitleKind
TITLE_KIND_MOVIE: TitleKind
TITLE_KIND_SERIES: TitleKind
TITLE_KIND_SEASON: TitleKind
TITLE_KIND_EPISODE: TitleKind
TITLE_KIND_LIVE_EVENT: TitleKind
VOD_PUBLICATION_STAGE_UNSPECIFIED: VodPublicationStage
VOD_PUBLICATION_STAGE_QUEUED: VodPublicationStage
VOD_PUBLICATION_STAGE_FETCH: VodPublicationStage
VOD_PUBLICATION_STAGE_ANALYSIS: VodPublicationStage
VOD_PUBLICATION_STAGE_ENCODE: VodPublicationStage
VOD_PUBLICATION_STAGE_UPLOAD: VodPublicationStage
VOD_PUBLICATION_STAGE_CATALOG: VodPublicationStage
VOD_PUBLICATION_STAGE_DONE: VodPublicationStage
VOD_PUBLICATION_STAGE_FAILED: VodPublicationStage

class Title(_message.Message):
    __slots__ = ("name", "kind", "display_title", "synopsis", "genres", "release_year", "maturity_rating", "parent", "season_number", "episode_number", "duration_seconds", "live_channel", "required_entitlement", "start_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_TITLE_FIELD_NUMBER: _ClassVar[int]
    SYNOPSIS_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_YEAR_FIELD_NUMBER: _ClassVar[int]
    MATURITY_RATING_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SEASON_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EPISODE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LIVE_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_ENTITLEMENT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: TitleKind
    display_title: str
    synopsis: str
    genres: _containers.RepeatedScalarFieldContainer[str]
    release_year: int
    maturity_rating: str
    parent: str
    season_number: int
    episode_number: int
    duration_seconds: int
    live_channel: str
    required_entitlement: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[TitleKind, str]] = ..., display_title: _Optional[str] = ..., synopsis: _Optional[str] = ..., genres: _Optional[_Iterable[str]] = ..., release_year: _Optional[int] = ..., maturity_rating: _Optional[str] = ..., parent: _Optional[str] = ..., season_number: _Optional[int] = ..., episode_number: _Optional[int] = ..., duration_seconds: _Optional[int] = ..., live_channel: _Optional[str] = ..., required_entitlement: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTitleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTitleResponse(_message.Message):
    __slots__ = ("title",)
    TITLE_FIELD_NUMBER: _ClassVar[int]
    title: Title
    def __init__(self, title: _Optional[_Union[Title, _Mapping]] = ...) -> None: ...

class BatchGetTitlesRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetTitlesResponse(_message.Message):
    __slots__ = ("titles", "missing")
    TITLES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    titles: _containers.RepeatedCompositeFieldContainer[Title]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, titles: _Optional[_Iterable[_Union[Title, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTitlesRequest(_message.Message):
    __slots__ = ("parent", "kind", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    kind: TitleKind
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., kind: _Optional[_Union[TitleKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTitlesResponse(_message.Message):
    __slots__ = ("titles", "next_page_token")
    TITLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    titles: _containers.RepeatedCompositeFieldContainer[Title]
    next_page_token: str
    def __init__(self, titles: _Optional[_Iterable[_Union[Title, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateTitleRequest(_message.Message):
    __slots__ = ("title_id", "title")
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    title_id: str
    title: Title
    def __init__(self, title_id: _Optional[str] = ..., title: _Optional[_Union[Title, _Mapping]] = ...) -> None: ...

class CreateTitleResponse(_message.Message):
    __slots__ = ("title",)
    TITLE_FIELD_NUMBER: _ClassVar[int]
    title: Title
    def __init__(self, title: _Optional[_Union[Title, _Mapping]] = ...) -> None: ...

class VodPublication(_message.Message):
    __slots__ = ("name", "title_id", "source_object", "stage", "fraction_done", "title", "error_code", "error_message", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OBJECT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_DONE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    title_id: str
    source_object: str
    stage: VodPublicationStage
    fraction_done: float
    title: Title
    error_code: str
    error_message: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., title_id: _Optional[str] = ..., source_object: _Optional[str] = ..., stage: _Optional[_Union[VodPublicationStage, str]] = ..., fraction_done: _Optional[float] = ..., title: _Optional[_Union[Title, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishVodTitleRequest(_message.Message):
    __slots__ = ("title_id", "display_title", "source_object")
    TITLE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_TITLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OBJECT_FIELD_NUMBER: _ClassVar[int]
    title_id: str
    display_title: str
    source_object: str
    def __init__(self, title_id: _Optional[str] = ..., display_title: _Optional[str] = ..., source_object: _Optional[str] = ...) -> None: ...

class PublishVodTitleResponse(_message.Message):
    __slots__ = ("publication",)
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    publication: VodPublication
    def __init__(self, publication: _Optional[_Union[VodPublication, _Mapping]] = ...) -> None: ...

class GetVodPublicationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetVodPublicationResponse(_message.Message):
    __slots__ = ("publication",)
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    publication: VodPublication
    def __init__(self, publication: _Optional[_Union[VodPublication, _Mapping]] = ...) -> None: ...
