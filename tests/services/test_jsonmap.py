"""kernel.rpc.jsonmap gives exactly what json_format gives, for every livemesh message."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.rpc import jsonmap
from livemesh.catalog.v1 import catalog_pb2
from livemesh.channels.v1 import channels_pb2
from livemesh.identity.v1 import identity_pb2
from livemesh.playback.v1 import playback_pb2
from livemesh.profile.v1 import profile_pb2
from livemesh.recommend.v1 import recommend_pb2
from livemesh.registry.v1 import registry_pb2
from livemesh.search.v1 import search_pb2

MODULES = (
    catalog_pb2,
    channels_pb2,
    identity_pb2,
    playback_pb2,
    profile_pb2,
    recommend_pb2,
    registry_pb2,
    search_pb2,
)
CLASSES: list[type[Message]] = [
    getattr(module, name) for module in MODULES for name in module.DESCRIPTOR.message_types_by_name
]
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
TEXT = st.text(max_size=8)


def fill(draw: st.DrawFn, message: Message, depth: int = 0) -> None:
    for fd in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = fd.is_repeated
        count = draw(st.integers(0, 3)) if repeated else 1
        for _ in range(count):
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                if fd.message_type.GetOptions().map_entry:
                    getattr(message, fd.name)[draw(TEXT)]  # touch a key
                    continue
                if depth > 2:
                    continue
                sub = getattr(message, fd.name).add() if repeated else getattr(message, fd.name)
                if fd.message_type.full_name == "google.protobuf.Timestamp":
                    sub.FromSeconds(draw(st.integers(0, 4_000_000_000)))
                    sub.nanos = draw(st.sampled_from([0, 5, 120_000_000, 999_999_999]))
                else:
                    sub.SetInParent()
                    fill(draw, sub, depth + 1)
                continue
            value = scalar(draw, fd)
            if repeated:
                getattr(message, fd.name).append(value)
            else:
                setattr(message, fd.name, value)


def scalar(draw: st.DrawFn, fd: FieldDescriptor) -> Any:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return draw(TEXT)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=8))
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return draw(st.sampled_from([v.number for v in fd.enum_type.values] + [99]))
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return draw(st.sampled_from([0.0, 1.5, -2.25, 0.1, math.inf]))
    low, high = INT_RANGES[fd.type]
    return draw(st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1 if low else 2])))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    message = draw(st.sampled_from(CLASSES))()
    fill(draw, message)
    return message


def printed(to_dict: Any, message: Message) -> Any:
    try:
        return to_dict(message)
    except Exception as exc:  # the same refusal too (a FieldMask path json_format rejects)
        return (type(exc), str(exc))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages())
def test_to_dict_is_message_to_dict(message: Message) -> None:
    assert printed(jsonmap.to_dict, message) == printed(json_format.MessageToDict, message)


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[type[Message], dict[str, Any]]:
    cls = draw(st.sampled_from(CLASSES))
    names = [n for fd in cls.DESCRIPTOR.fields for n in (fd.json_name, fd.name)]
    keys = st.sampled_from([*names, "nope"]) if names else st.just("nope")
    data = draw(st.dictionaries(keys, JSON_VALUES, max_size=6))
    return cls, data


def outcome(parse: Any, cls: type[Message], data: dict[str, Any]) -> Any:
    try:
        return parse(data, cls())
    except Exception as exc:
        return (type(exc), str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies())
def test_parse_dict_is_json_format_parse_dict(case: tuple[type[Message], dict[str, Any]]) -> None:
    cls, data = case
    assert outcome(jsonmap.parse_dict, cls, data) == outcome(json_format.ParseDict, cls, data)


def test_the_press_play_messages_take_the_fast_way() -> None:
    assert jsonmap._plan(playback_pb2.StartPlaybackResponse.DESCRIPTOR) is not None
    request = jsonmap.parse_dict(
        {"content": "channels/demo", "clientRegion": "eu-west", "maxUrls": 3},
        playback_pb2.StartPlaybackRequest(),
    )
    assert request == playback_pb2.StartPlaybackRequest(
        content="channels/demo", client_region="eu-west", max_urls=3
    )
