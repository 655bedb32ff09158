"""A request's JSON body, read as hostile input: bounded in size, media type and nesting
before it is parsed, and mapped onto the RPC's request message with every refusal naming
the offending field, so bad input is a 4xx with a reason and never a server error.

Nesting is bounded before parsing because the parsers recurse: ``json`` stops at the
interpreter's recursion limit with a ``RecursionError``, and ``json_format`` recurses
again per nested message.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, NoReturn

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from kernel.rpc import jsonmap
from kernel.rpc.errors import InvalidArgument

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 32  # the deepest request message is 3 levels; room to grow, none to recurse
# The media types a JSON body may come under: JSON's own, and the two that clients send
# JSON under by default (curl -d: form-urlencoded; fetch and aiohttp with a str: text/plain).
JSON_MEDIA_TYPES = frozenset(
    {"application/json", "application/x-www-form-urlencoded", "text/plain"}
)
# A JSON string; an unterminated one runs to the end, so that stripping strings is linear.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# the brackets as signed steps (+1 opens, -1 closes), everything else dropped
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class BodyRejected(Exception):
    """A body refused before it is read as JSON, with its own HTTP status (413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# strict RFC 8259: NaN and Infinity, which json accepts by default, are refused
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _check_media_type(request: web.Request) -> None:
    if "Content-Type" not in request.headers:
        return
    media_type = request.content_type
    if media_type not in JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise BodyRejected(415, f"body: Content-Type {media_type} is not application/json")


def _too_large() -> BodyRejected:
    return BodyRejected(413, f"body: larger than {MAX_BODY_BYTES} bytes")


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()  # refused before a byte of it is read
    try:
        return await request.read()  # stops past the app's client_max_size (chunked bodies)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None


def nesting_within(body: bytes, limit: int) -> bool:
    """Whether no array or object in ``body`` is nested more than ``limit`` deep.

    Counting the brackets proves it for every ordinary body. A body with more brackets
    than the limit has its strings stripped and its deepest point found, all in C (a few
    milliseconds for the largest body); after a stray closing bracket the count may be
    off, but the parser stops there.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return True
    steps = _STRING.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0) <= limit


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty)."""
    _check_media_type(request)
    body = await _read(request)
    if not body or body.isspace():
        return {}
    if not nesting_within(body, MAX_DEPTH):
        raise InvalidArgument("body", f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = _DECODER.decode(body.decode())
    except UnicodeDecodeError:
        raise InvalidArgument("body", "is not UTF-8") from None
    except ValueError as exc:
        raise InvalidArgument("body", f"is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return data


def fill(data: dict[str, Any], message: Message) -> None:
    """``data`` into ``message`` (proto3 JSON mapping); refusals name the field's JSON path."""
    try:
        jsonmap.parse_dict(data, message)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise _refusal(str(exc), message.DESCRIPTOR) from None


# json_format's messages: "Failed to parse a field: Failed to parse b field: <why>" down
# the path, ending in '... has no field named "c" ...' when the last key is unknown
_PARSING = re.compile(r"Failed to parse (\w+) field: ")
_UNKNOWN = re.compile(r'has no field named "([^"]*)"')


def _refusal(text: str, descriptor: Descriptor) -> InvalidArgument:
    path: list[str] = []
    rest = text
    while match := _PARSING.match(rest):
        path.append(match.group(1))
        rest = rest[match.end() :]
    unknown = _UNKNOWN.search(rest)
    if unknown:
        return InvalidArgument(".".join([*path, unknown.group(1)]), "unknown field")
    fd = _field_at(descriptor, path)
    if fd is None:
        return InvalidArgument(".".join(path) or "body", "is not valid")
    return InvalidArgument(".".join(path), expected(fd))


def _field_at(descriptor: Descriptor, path: list[str]) -> FieldDescriptor | None:
    fd = None
    for key in path:
        if descriptor is None:
            return None
        fd = _by_json_key(descriptor, key)
        if fd is None:
            return None
        descriptor = fd.message_type
    return fd


def _by_json_key(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    return descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)


_EXPECTED = {
    FieldDescriptor.TYPE_STRING: "a string",
    FieldDescriptor.TYPE_BOOL: "true or false",
    FieldDescriptor.TYPE_INT32: "a 32-bit integer",
    FieldDescriptor.TYPE_SINT32: "a 32-bit integer",
    FieldDescriptor.TYPE_SFIXED32: "a 32-bit integer",
    FieldDescriptor.TYPE_UINT32: "a 32-bit integer, 0 or more",
    FieldDescriptor.TYPE_FIXED32: "a 32-bit integer, 0 or more",
    FieldDescriptor.TYPE_INT64: "a 64-bit integer (a number or a decimal string)",
    FieldDescriptor.TYPE_SINT64: "a 64-bit integer (a number or a decimal string)",
    FieldDescriptor.TYPE_SFIXED64: "a 64-bit integer (a number or a decimal string)",
    FieldDescriptor.TYPE_UINT64: "a 64-bit integer, 0 or more",
    FieldDescriptor.TYPE_FIXED64: "a 64-bit integer, 0 or more",
    FieldDescriptor.TYPE_DOUBLE: "a number",
    FieldDescriptor.TYPE_FLOAT: "a number",
    FieldDescriptor.TYPE_BYTES: "a base64 string",
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": "an RFC 3339 timestamp string",
    "google.protobuf.FieldMask": "a string of comma-separated field paths",
}


def expected(fd: FieldDescriptor) -> str:
    """What a field takes, as its refusal says: "must be a string"."""
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return "must be an object"
    if fd.type == FieldDescriptor.TYPE_ENUM:
        one = "one of " + ", ".join(v.name for v in fd.enum_type.values)
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        one = _WELL_KNOWN.get(fd.message_type.full_name, "an object")
    else:
        one = _EXPECTED.get(fd.type, "valid")
    return f"must be a list, each {one}" if fd.is_repeated else f"must be {one}"
