"""AMF0, the value encoding of RTMP commands: only the kinds a publish handshake carries.

The RTMP front must read a client's ``connect`` and ``publish`` and answer a refusal
in words the client logs; FFmpeg does the rest, so nothing richer is needed here.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any


def encode_amf0(value: Any) -> bytes:
    """One AMF0 value of the kinds a status reply needs."""
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, (int, float)):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        return b"\x02" + len(raw).to_bytes(2, "big") + raw
    if isinstance(value, dict):
        body = b"".join(
            len(k.encode()).to_bytes(2, "big") + k.encode() + encode_amf0(v)
            for k, v in value.items()
        )
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def decode_amf0(data: bytes) -> list[Any]:
    """AMF0 values in ``data``, as far as they are of the kinds commands use."""
    values: list[Any] = []
    pos = 0

    def string(at: int, wide: bool = False) -> tuple[str, int]:
        size_len = 4 if wide else 2
        size = int.from_bytes(data[at : at + size_len], "big")
        start = at + size_len
        return data[start : start + size].decode("utf-8", "replace"), start + size

    def value(at: int) -> tuple[Any, int]:
        marker = data[at]
        at += 1
        if marker == 0x00:
            return struct.unpack_from(">d", data, at)[0], at + 8
        if marker == 0x01:
            return bool(data[at]), at + 1
        if marker == 0x02:
            return string(at)
        if marker in (0x03, 0x08):
            if marker == 0x08:
                at += 4
            obj: dict[str, Any] = {}
            while data[at : at + 3] != b"\x00\x00\x09":
                key, at = string(at)
                obj[key], at = value(at)
            return obj, at + 3
        if marker in (0x05, 0x06):
            return None, at
        if marker == 0x0C:
            return string(at, wide=True)
        raise ValueError(f"AMF0 marker {marker:#x} not handled")

    with contextlib.suppress(ValueError, IndexError, struct.error):
        while pos < len(data):
            item, pos = value(pos)
            values.append(item)
    return values
