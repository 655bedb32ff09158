"""RTMP ingest (``rtmp://host:1935/live/<stream key>``), the key enforced by livemesh.

FFmpeg's RTMP listener (through PyAV) speaks the protocol and demuxes FLV, but
takes any stream name with only a warning and serves one connection per
listen.  So a small front owns port 1935: for every publisher it starts a
private FFmpeg listener on a loopback port and relays the bytes both ways,
reading the client's side up to its ``publish`` command (RTMP chunk stream,
AMF0).  The command is held back until the key is checked: a wrong key, an
app other than ``live``, or a channel that already has a broadcaster closes
the connection before FFmpeg sees a byte of media, after telling the client
why (``onStatus`` ``NetStream.Publish.BadName`` for a wrong key,
``NetStream.Publish.Denied`` for a busy channel, ``_error``
``NetConnection.Connect.Rejected`` for a wrong app), so its log names the cause.
Once accepted, the relay stops parsing and the decode thread feeds the
channel's :class:`IngestFeed` (one clock for audio and video: FLV timestamps
share it).

Connections are admitted first (:mod:`live.ingest.admission`): a client
connecting too often, or too many connections not yet publishing, are closed
before a listener is started for them.  The private listeners take ports from
:data:`PRIVATE_PORTS`, below Linux's ephemeral range, reserved in-process and
probed before use, so no outgoing socket of this host is handed the port
between its choice and FFmpeg's bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

import av
from prometheus_client import Counter

from live.ingest.admission import Admission, Verdict
from live.ingest.ingest_source import ChannelBusy, IngestFeed, IngestSource
from live.ingest.keys import StreamKeys
from livemesh import clock

log = logging.getLogger("livemesh.ingest.rtmp")

RTMP_APP = "live"
HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0, C1, C2
PUBLISH_TIMEOUT_S = 10.0  # connect to publish, at most
LISTENER_START_S = 3.0  # FFmpeg's private listener must be up by then
READ_TIMEOUT_S = 5.0  # a publisher silent this long is gone
NO_MEDIA_S = 5.0  # an accepted publisher whose bytes decode to nothing this long is ended
MESSAGE_HEADER_BYTES = (11, 7, 3, 0)
MAX_COMMAND_BYTES = 64 * 1024
PRIVATE_PORTS = range(21000, 29000)  # FFmpeg's private listeners; below 32768 (ephemeral)
STATUS_CHUNK_STREAM = 5

PUBLISHERS = Counter("livemesh_rtmp_publishers", "RTMP publish attempts by outcome", ["outcome"])


class RtmpRefused(Exception):
    """The publisher is turned away; the reason is logged and ``reply`` sent to it."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


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


def command_message(stream_id: int, *values: Any) -> bytes:
    """An AMF0 command message, chunked at the protocol's initial 128-byte chunk size."""
    payload = b"".join(encode_amf0(v) for v in values)
    header = (
        bytes([STATUS_CHUNK_STREAM])  # fmt 0
        + (0).to_bytes(3, "big")
        + len(payload).to_bytes(3, "big")
        + b"\x14"  # AMF0 command
        + stream_id.to_bytes(4, "little")
    )
    chunks = [payload[at : at + 128] for at in range(0, len(payload), 128)]
    return header + bytes([0xC0 | STATUS_CHUNK_STREAM]).join(chunks)


def publish_status(stream_id: int, code: str, description: str) -> bytes:
    """``onStatus`` with level ``error`` for a refused ``publish``."""
    info = {"level": "error", "code": code, "description": description}
    return command_message(stream_id, "onStatus", 0, None, info)


def connect_rejected(transaction: float, description: str) -> bytes:
    info = {"level": "error", "code": "NetConnection.Connect.Rejected", "description": description}
    return command_message(0, "_error", transaction, None, info)


# -- AMF0 and the RTMP chunk stream (client to server only) ---------------------------------


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


# -- the front ------------------------------------------------------------------------------


class PortPool:
    """Loopback ports for private listeners: reserved here, probed free, given back."""

    def __init__(self, ports: range = PRIVATE_PORTS) -> None:
        self.ports = ports
        self.in_use: set[int] = set()
        self._next = 0

    def reserve(self) -> int:
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            if port in self.in_use:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue  # someone else's: skip it
            self.in_use.add(port)
            return port
        raise RtmpRefused("no private listener port free")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


class RtmpPublisher:
    """One publisher: the relay to a private FFmpeg listener, and its decode thread."""

    def __init__(
        self, front: RtmpFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.front = front
        self.client_reader, self.client_writer = reader, writer
        self.port = front.ports.reserve()
        self.feed: IngestFeed | None = None
        self.channel: str | None = None
        self.stopping = threading.Event()
        self.decoded = threading.Event()
        self.admitted = True  # holds an admission slot until it publishes or leaves
        self.thread = threading.Thread(target=self._decode, name=f"rtmp-{self.port}", daemon=True)

    async def run(self) -> None:
        self.thread.start()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        watchdog = asyncio.create_task(self._watchdog())
        try:
            upstream = await self._connect_listener()
            await self._relay(*upstream)
        except (RtmpRefused, ConnectionError, TimeoutError) as exc:
            log.info("rtmp: publisher from %s refused or gone: %s", self._peer(), exc)
        finally:
            watchdog.cancel()
            self._admitted_done()
            self.stopping.set()
            for w in (self.client_writer, upstream[1] if upstream else None):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            await asyncio.to_thread(self.thread.join, 10)
            if not self.thread.is_alive():
                self.front.ports.release(self.port)
            if self.feed is not None:
                self.feed.close()
                log.info("rtmp: channel %s publisher left", self.channel)

    def _peer(self) -> str:
        return str(self.client_writer.get_extra_info("peername"))

    async def _connect_listener(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """FFmpeg opens its listener in the decode thread; it has no ready signal, so retry."""
        deadline = asyncio.get_running_loop().time() + LISTENER_START_S
        while True:
            try:
                return await asyncio.open_connection("127.0.0.1", self.port)
            except ConnectionRefusedError:
                if asyncio.get_running_loop().time() > deadline or not self.thread.is_alive():
                    raise
                await asyncio.sleep(0.01)

    async def _relay(
        self, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        async def downstream() -> None:
            while data := await up_reader.read(65536):
                self.client_writer.write(data)
                await self.client_writer.drain()

        back = asyncio.create_task(downstream())
        try:
            commands = CommandReader()
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                while self.feed is None:
                    data = await self.client_reader.read(65536)
                    if not data:
                        return
                    try:
                        for name, args in commands.feed(data):
                            await self._command(name, args, commands.stream_id)
                    except RtmpRefused as refused:
                        await self._refuse(back, refused)
                        raise
                    up_writer.write(data)  # the publish command only once it is accepted
                    await up_writer.drain()
            self._admitted_done()
            while data := await self.client_reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
        finally:
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await back

    async def _refuse(self, back: asyncio.Task[None], refused: RtmpRefused) -> None:
        """Stop relaying FFmpeg's replies, then tell the client why it is turned away."""
        back.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await back
        if refused.reply:
            with contextlib.suppress(ConnectionError):
                self.client_writer.write(refused.reply)
                await self.client_writer.drain()

    def _admitted_done(self) -> None:
        if self.admitted:
            self.admitted = False
            self.front.admission.done()

    async def _command(self, name: str, args: list[Any], stream_id: int = 1) -> None:
        if name == "connect":
            app = args[1].get("app", "") if len(args) > 1 and isinstance(args[1], dict) else ""
            if str(app).strip("/") != RTMP_APP:
                PUBLISHERS.labels("bad_app").inc()
                transaction = args[0] if args and isinstance(args[0], float) else 1.0
                reason = f"app {app!r} is not {RTMP_APP!r}"
                raise RtmpRefused(reason, connect_rejected(transaction, reason))
        elif name == "publish":
            key = str(args[2]).split("?", 1)[0] if len(args) > 2 else ""
            channel = await self.front.keys.channel_for(key)
            source = self.front.sources.get(channel) if channel else None
            if channel is None or source is None:
                PUBLISHERS.labels("bad_key").inc()
                reply = publish_status(stream_id, "NetStream.Publish.BadName", "wrong stream key")
                raise RtmpRefused("wrong stream key", reply)
            try:
                self.feed = source.attach(shared_clock=True, on_evicted=self._evicted)
            except ChannelBusy as exc:
                PUBLISHERS.labels("busy").inc()
                reason = f"channel {channel} already has a broadcaster"
                reply = publish_status(stream_id, "NetStream.Publish.Denied", reason)
                raise RtmpRefused(reason, reply) from exc
            self.channel = channel
            PUBLISHERS.labels("accepted").inc()
            log.info("rtmp: channel %s publisher from %s accepted", channel, self._peer())

    def _evicted(self) -> None:
        self.stopping.set()
        self.client_writer.transport.abort()

    async def _watchdog(self) -> None:
        """End a publisher whose bytes stop decoding (garbage, a stalled encoder)."""
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)  # a periodic check: there is no event for "nothing"
            feed = self.feed
            if feed is None or feed.detached:
                continue
            last = feed.last_arrival_ms or feed.attached_ms
            if clock.now_ms() - last > NO_MEDIA_S * 1000:
                log.info("rtmp: channel %s publisher sent no media: ended", self.channel)
                PUBLISHERS.labels("no_media").inc()
                self._evicted()
                return

    def _decode(self) -> None:
        """FFmpeg's listener: demux and decode, hand frames to the feed (a worker thread)."""
        url = f"rtmp://127.0.0.1:{self.port}/{RTMP_APP}/ingest"
        try:
            with av.open(
                url,
                options={"listen": "1"},
                timeout=(LISTENER_START_S + PUBLISH_TIMEOUT_S, READ_TIMEOUT_S),
            ) as container:
                streams = [s for s in container.streams if s.type in ("video", "audio")]
                for packet in container.demux(streams):
                    if self.stopping.is_set():
                        break
                    for frame in packet.decode():
                        self._deliver(frame)
        except (av.FFmpegError, OSError) as exc:
            if not self.stopping.is_set():
                log.info("rtmp: listener on %d ended: %s", self.port, exc)
        finally:
            self.stopping.set()
            loop = self.front.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.client_writer.transport.abort)

    def _deliver(self, frame: Any) -> None:
        feed = self.feed
        if feed is None or feed.detached or frame.time is None:
            return
        if isinstance(frame, av.VideoFrame):
            feed.video(frame, float(frame.time), clock.now_ms())
        elif isinstance(frame, av.AudioFrame):
            feed.audio(frame, float(frame.time), clock.now_ms())
        self.decoded.set()


class RtmpFront:
    """Port 1935: every connection becomes an :class:`RtmpPublisher`."""

    def __init__(
        self,
        sources: dict[str, IngestSource],
        keys: StreamKeys,
        host: str,
        port: int,
        admission: Admission | None = None,
    ) -> None:
        self.sources, self.keys = sources, keys
        self.admission = admission if admission is not None else Admission()
        self.ports = PortPool()
        self.host, self.port = host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.publishers: set[RtmpPublisher] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ingest: RTMP on rtmp://%s:%d/%s/<stream key>", self.host, self.port, RTMP_APP)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        verdict = self.admission.admit(client, clock.now_ms())
        if verdict is not Verdict.ADMITTED:
            PUBLISHERS.labels(verdict.value).inc()
            writer.transport.abort()
            return
        try:
            publisher = RtmpPublisher(self, reader, writer)
        except RtmpRefused:
            self.admission.done()
            writer.transport.abort()
            return
        self.publishers.add(publisher)
        try:
            await publisher.run()
        finally:
            self.publishers.discard(publisher)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for publisher in list(self.publishers):
            publisher.stopping.set()
            publisher.client_writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
