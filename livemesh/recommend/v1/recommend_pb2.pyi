from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_WATCHED_TOGETHER: _ClassVar[Reason]
    REASON_POPULAR: _ClassVar[Reason]
REASON_UNSPECIFIED: Reason
REASON_WATCHED_TOGETHER: Reason
REASON_POPULAR: Reason

class Recommendation(_message.Message):
    __slots__ = ("title", "score", "reason", "because_of")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_OF_FIELD_NUMBER: _ClassVar[int]
    title: str
    score: float
    reason: Reason
    because_of: str
    def __init__(self, title: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[_Union[Reason, str]] = ..., because_of: _Optional[str] = ...) -> None: ...

class ListRecommendationsRequest(_message.Message):
    __slots__ = ("parent", "page_size")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListRecommendationsResponse(_message.Message):
    __slots__ = ("recommendations", "fallback")
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    fallback: bool
    def __init__(self, recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., fallback: _Optional[bool] = ...) -> None: ...
