"""Proto3 JSON mapping on the hot paths, without ``json_format``'s per-field reflection.

``json_format`` walks every field of a message's descriptor in Python for each message;
on press play (a request parsed by the gateway, a session written to Redis by playback,
the reply turned back into JSON by the gateway) that costs more than the work itself.
:func:`to_dict` asks the message for its set fields only (``ListFields``, in C) and
converts them from a per-type plan; :func:`parse_dict` fills flat requests directly.

Both give exactly what ``json_format.MessageToDict`` / ``ParseDict`` give with their
default options, and fall back to them for anything outside the subset they handle
(maps, floats, bytes, well-known types other than Timestamp; on parsing: anything but
a string, integer or boolean of the right type for a known field, given once), so
errors and edge cases are ``json_format``'s own.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_PLAIN = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
_INT32 = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
_TIMESTAMP = "google.protobuf.Timestamp"

Convert = Callable[[Any], Any]
# per message type: None when json_format must do it, else field number -> (json name, convert)
_plans: dict[str, dict[int, tuple[str, Convert]] | None] = {}


def _same(value: Any) -> Any:
    return value


_EPOCH = datetime.datetime(1970, 1, 1)
_TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_799 + 1)  # 0001-01-01 .. 9999-12-31


@functools.lru_cache(maxsize=256)
def _utc(seconds: int) -> str:
    # replies of one second share their timestamps' seconds (start, start + URL lifetime)
    return (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()


def _timestamp(value: Any) -> Any:
    """``value.ToJsonString()`` (3, 6 or 9 fractional digits, as needed) without building a
    datetime per call: that was a third of a StartPlaybackResponse's conversion."""
    seconds, nanos = value.seconds, value.nanos
    if seconds not in _TIMESTAMP_SECONDS or not 0 <= nanos < 1_000_000_000:
        return value.ToJsonString()  # out of range: its own error
    text = _utc(seconds)
    if nanos == 0:
        return text + "Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{text}.{nanos // 1_000:06d}Z"
    return f"{text}.{nanos:09d}Z"


def _enum(fd: FieldDescriptor) -> Convert:
    names = {v.number: v.name for v in fd.enum_type.values}

    def convert(value: int) -> Any:
        return names.get(value, value)  # an unknown value: its number, as json_format

    return convert


def _message(fd: FieldDescriptor) -> Convert | None:
    sub = fd.message_type
    if sub.full_name == _TIMESTAMP:
        return _timestamp
    if sub.full_name.startswith("google.protobuf.") or _plan(sub) is None:
        return None

    def convert(value: Message) -> dict[str, Any]:
        return _convert(value, _plans[sub.full_name])  # type: ignore[arg-type]

    return convert


def _field(fd: FieldDescriptor) -> Convert | None:
    if fd.type in _PLAIN:
        return _same
    if fd.type in _INT64:
        return str
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum(fd)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(fd)
    return None  # float, double (NaN, Infinity, float32 rounding) and bytes (base64)


def _plan(descriptor: Descriptor) -> dict[int, tuple[str, Convert]] | None:
    if descriptor.full_name in _plans:
        return _plans[descriptor.full_name]
    _plans[descriptor.full_name] = None  # until proven otherwise (and for recursion)
    if descriptor.GetOptions().map_entry or descriptor.extension_ranges:
        return None
    plan: dict[int, tuple[str, Convert]] = {}
    for fd in descriptor.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            return None
        convert = _field(fd)
        if convert is None:
            return None
        if fd.is_repeated:
            one = convert
            convert = lambda values, one=one: [one(v) for v in values]  # noqa: E731
        plan[fd.number] = (fd.json_name, convert)
    _plans[descriptor.full_name] = plan
    return plan


def _convert(message: Message, plan: dict[int, tuple[str, Convert]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd, value in message.ListFields():
        name, convert = plan[fd.number]
        out[name] = convert(value)
    return out


def to_dict(message: Message) -> dict[str, Any]:
    """``json_format.MessageToDict(message)``."""
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        converted: dict[str, Any] = json_format.MessageToDict(message)
        return converted
    return _convert(message, plan)


# -- parsing ----------------------------------------------------------------------------

# per message type: None when json_format must do it, else JSON key -> (field, type test)
_parse_plans: dict[str, dict[str, tuple[FieldDescriptor, Callable[[Any], bool]]] | None] = {}


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_int32(value: Any) -> bool:
    return type(value) is int and -(2**31) <= value < 2**31


def _is_uint32(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**32


def _parse_plan(
    descriptor: Descriptor,
) -> dict[str, tuple[FieldDescriptor, Callable[[Any], bool]]] | None:
    if descriptor.full_name in _parse_plans:
        return _parse_plans[descriptor.full_name]
    plan: dict[str, tuple[FieldDescriptor, Callable[[Any], bool]]] | None = {}
    for fd in descriptor.fields:
        if fd.is_repeated or fd.containing_oneof is not None:
            test = None
        elif fd.type == FieldDescriptor.TYPE_STRING:
            test = _is_str
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            test = _is_bool
        elif fd.type in _INT32:
            test = _is_int32
        elif fd.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            test = _is_uint32
        else:
            test = None
        if test is not None and plan is not None:
            plan[fd.json_name] = (fd, test)
            plan[fd.name] = (fd, test)
    _parse_plans[descriptor.full_name] = plan
    return plan


def parse_dict(data: dict[str, Any], message: M) -> M:
    """``json_format.ParseDict(data, message)`` (``message`` fresh: nothing set yet)."""
    plan = _parse_plan(message.DESCRIPTOR)
    if plan is not None:
        values: dict[str, Any] = {}
        for key, value in data.items():
            entry = plan.get(key)
            if entry is None or not entry[1](value) or entry[0].name in values:
                break  # unknown key, other type, a field named twice: json_format's to judge
            values[entry[0].name] = value
        else:
            try:
                for name, value in values.items():
                    setattr(message, name, value)
                return message
            except (ValueError, TypeError):
                message.Clear()
    return json_format.ParseDict(data, message)  # type: ignore[no-any-return]
