"""The RTMP chunk stream as the front sees it: the client's commands in, refusals out.

The front reads the client's side only up to its ``publish`` command (everything after
is FFmpeg's business), so the reader reassembles command messages and counts, but does
not keep, media.  A refusal is an AMF0 command message the client understands, so its
log names the cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from live.ingest.amf0 import decode_amf0, encode_amf0

HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2
MESSAGE_HEADER_BYTES = (11, 7, 3, 0)
MAX_COMMAND_BYTES = 64 * 1024
STATUS_CHUNK_STREAM = 5


class RtmpRefused(Exception):
    """The publisher is turned away; the reason is logged and ``reply`` sent to it."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


def command_message(stream_id: int, *values: Any, chunk_size: int = 128) -> bytes:
    """An AMF0 command message, chunked at ``chunk_size``: the size the server's side last
    set (the protocol starts at 128), or the client reads the chunk headers as payload."""
    payload = b"".join(encode_amf0(v) for v in values)
    header = (
        bytes([STATUS_CHUNK_STREAM])  # fmt 0
        + (0).to_bytes(3, "big")
        + len(payload).to_bytes(3, "big")
        + b"\x14"  # AMF0 command
        + stream_id.to_bytes(4, "little")
    )
    chunks = [payload[at : at + chunk_size] for at in range(0, len(payload), chunk_size)]
    return header + bytes([0xC0 | STATUS_CHUNK_STREAM]).join(chunks)


def publish_status(stream_id: int, code: str, description: str, chunk_size: int = 128) -> bytes:
    """``onStatus`` with level ``error``: a refused ``publish``, or a publisher cut off.

    FFmpeg logs an error status's description (``Server error: ...``) and stops; OBS's
    librtmp closes on ``NetStream.Publish.Denied``.
    """
    info = {"level": "error", "code": code, "description": description}
    return command_message(stream_id, "onStatus", 0, None, info, chunk_size=chunk_size)


def connect_rejected(transaction: float, description: str, chunk_size: int = 128) -> bytes:
    """``_error`` answering ``connect`` to an app other than ours."""
    info = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": description}
    return command_message(0, "_error", transaction, None, info, chunk_size=chunk_size)


@dataclass
class _ChunkStream:
    timestamp: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


class CommandReader:
    """Reassembles the client's RTMP messages and yields its AMF0 commands."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._handshake_left = HANDSHAKE_BYTES
        self._chunk_size = 128
        self._streams: dict[int, _ChunkStream] = {}
        self.stream_id = 0  # message stream of the last command read

    @property
    def chunk_size(self) -> int:
        """The chunk size this side last set (Set Chunk Size), 128 before it set one."""
        return self._chunk_size

    @property
    def between_chunks(self) -> bool:
        """No chunk is half read: another message may be written into this direction now."""
        return not self._buffer and not self._handshake_left

    def feed(self, data: bytes) -> list[tuple[str, list[Any]]]:
        """Commands completed by ``data``: ``(name, [transaction id, object, args...])``."""
        if self._handshake_left:
            skip = min(self._handshake_left, len(data))
            self._handshake_left -= skip
            data = data[skip:]
        self._buffer += data
        commands: list[tuple[str, list[Any]]] = []
        while (message := self._next_message()) is not None:
            type_id, stream_id, payload = message
            if type_id == 1 and len(payload) >= 4:  # Set Chunk Size
                self._chunk_size = max(1, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
            elif type_id in (17, 20):  # AMF3 (first byte 0) or AMF0 command
                values = decode_amf0(bytes(payload[1:] if type_id == 17 else payload))
                if values and isinstance(values[0], str):
                    commands.append((values[0], values[1:]))
                    self.stream_id = stream_id
        return commands

    def _next_message(self) -> tuple[int, int, bytes] | None:
        while True:
            buf = self._buffer
            if not buf:
                return None
            fmt, csid, pos = buf[0] >> 6, buf[0] & 0x3F, 1
            if csid in (0, 1):
                need = 2 if csid == 0 else 3
                if len(buf) < need:
                    return None
                csid = 64 + buf[1] + (buf[2] * 256 if csid == 1 else 0)
                pos = need
            header = MESSAGE_HEADER_BYTES[fmt]
            if len(buf) < pos + header:
                return None
            stream = self._streams.setdefault(csid, _ChunkStream())
            if header:
                stamp = int.from_bytes(buf[pos : pos + 3], "big")
                stream.extended = stamp == 0xFFFFFF
            if header >= 7:
                stream.length = int.from_bytes(buf[pos + 3 : pos + 6], "big")
                stream.type_id = buf[pos + 6]
                if stream.length > MAX_COMMAND_BYTES and stream.type_id in (1, 17, 20):
                    raise RtmpRefused("oversized command")
            if header >= 11:
                stream.stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
            pos += header + (4 if stream.extended else 0)
            size = min(self._chunk_size, stream.length - len(stream.payload))
            if len(buf) < pos + size:
                return None
            if stream.type_id in (1, 17, 20):
                stream.payload += buf[pos : pos + size]
            else:  # media or control we do not read: count, do not keep
                stream.payload += bytes(size)
            del buf[: pos + size]
            if len(stream.payload) >= stream.length:
                payload, stream.payload = bytes(stream.payload), bytearray()
                return stream.type_id, stream.stream_id, payload
