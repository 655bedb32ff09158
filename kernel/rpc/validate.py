"""Field validation shared by every servicer: each check names the field it rejects."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from kernel.rpc.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def required(value: str, field: str, max_len: int = 1000) -> str:
    """A non-empty string of at most ``max_len`` characters."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"longer than {max_len} characters")
    return value


def text(value: str, field: str, min_len: int, max_len: int) -> str:
    """A string whose stripped length is within bounds, without control characters."""
    stripped = value.strip()
    if len(stripped) < min_len:
        raise InvalidArgument(field, "is required" if min_len else "too short")
    if len(stripped) > max_len:
        raise InvalidArgument(field, f"longer than {max_len} characters")
    if any(ord(c) < 32 for c in stripped):
        raise InvalidArgument(field, "contains control characters")
    return stripped


def resource_id(value: str, field: str) -> str:
    """An id of 1-63 characters of ``[a-z0-9_-]``, starting with a letter or digit."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not ID_PATTERN.match(value):
        raise InvalidArgument(field, "must be 1-63 of [a-z0-9_-], starting with a letter or digit")
    return value


def parse_name(name: str, field: str, *collections: str) -> list[str]:
    """``collection/{id}[/collection/{id}...]`` → the ids, checked against the pattern."""
    if not name:
        raise InvalidArgument(field, "is required")
    parts = name.split("/")
    if len(parts) != 2 * len(collections) or parts[0::2] != list(collections):
        shape = "/".join(f"{c}/{{id}}" for c in collections)
        raise InvalidArgument(field, f"must be a resource name {shape}")
    ids = parts[1::2]
    for value in ids:
        if not ID_PATTERN.match(value):
            raise InvalidArgument(field, f"bad id {value[:64]!r} in resource name")
    return ids


def request_id(value: str, field: str = "request_id") -> str:
    """Empty (no idempotency) or 1-64 of ``[A-Za-z0-9_-]`` (a UUID fits)."""
    if value and not REQUEST_ID_PATTERN.match(value):
        raise InvalidArgument(field, "must be 1-64 of [A-Za-z0-9_-]")
    return value


def page_size(value: int, default: int, maximum: int, field: str = "page_size") -> int:
    """0 means ``default``; otherwise 1..``maximum``."""
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return value or default


def encode_page_token(state: dict[str, Any]) -> str:
    """An opaque token for the next page (the cursor as URL-safe base64 JSON)."""
    return base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()


def decode_page_token(token: str, field: str = "page_token") -> dict[str, Any]:
    """The cursor of a token made by :func:`encode_page_token`; empty → ``{}``."""
    if not token:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidArgument(field, "is not a token this service issued") from exc
    if not isinstance(state, dict):
        raise InvalidArgument(field, "is not a token this service issued")
    return state


def offset_from_token(token: str, field: str = "page_token") -> int:
    """The ``offset`` cursor of a page token (0 for the first page)."""
    offset = decode_page_token(token, field).get("o", 0)
    if not isinstance(offset, int) or offset < 0:
        raise InvalidArgument(field, "is not a token this service issued")
    return offset


def next_offset_token(offset: int, page: int, total_seen: int) -> str:
    """The token of the page after ``[offset, offset+page)`` when more rows exist."""
    return encode_page_token({"o": offset + page}) if total_seen > page else ""
