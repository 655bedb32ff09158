"""The player's segment connections: raw keep-alive HTTP/1.1 with the llhttp parser.

Segments go over raw keep-alive asyncio connections with the llhttp response parser
(``httptools``, in C), one per track, like the edge bench's viewers (bench/_harness.py),
not through aiohttp: a player's cost is per chunk (five a second per track with 200 ms
chunks), so a body is scanned in the protocol callback with no task, timer or copy of its
own, and a fetch is a future the protocol completes, not a task.
"""

from __future__ import annotations

import asyncio
import time

import httptools

from kernel.isobmff import ChunkScanner


class SegmentConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection: one GET at a time, body scanned for chunks."""

    __slots__ = (
        "bytes",
        "done",
        "first_byte",
        "keep_alive",
        "last_byte",
        "lost",
        "parser",
        "scanner",
        "status",
        "timer",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.done: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scanner: ChunkScanner | None = None
        self.status = 0
        self.first_byte = 0.0
        self.last_byte = 0.0
        self.bytes = 0
        self.keep_alive = True

    def send(
        self, request: bytes, scanner: ChunkScanner | None, timeout_s: float
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.scanner = scanner
        self.status = 0
        self.first_byte = self.last_byte = 0.0
        self.bytes = 0
        self.done = loop.create_future()
        self.timer = loop.call_later(timeout_s, self._end, TimeoutError("no complete response"))
        assert self.transport is not None
        self.transport.write(request)
        return self.done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._end(exc or ConnectionResetError("connection closed before the body ended"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        now = time.time()
        if not self.bytes:
            self.first_byte = now
        self.last_byte = now
        self.bytes += len(body)
        if self.scanner is not None:
            self.scanner.feed(body, now)

    def on_message_complete(self) -> None:
        self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.done is not None and not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
                if self.transport is not None:
                    self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class EdgeLink:
    """The player's connection to one edge for one track (reopened when closed)."""

    __slots__ = ("conn", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conn: SegmentConnection | None = None

    async def connect(self, timeout_s: float) -> SegmentConnection:
        """The open keep-alive connection, (re)opened if the last one was closed."""
        conn = self.conn
        if conn is None or conn.lost or not conn.keep_alive:
            if conn is not None:
                conn.close()
            loop = asyncio.get_running_loop()
            _, conn = await asyncio.wait_for(  # type: ignore[assignment]
                loop.create_connection(SegmentConnection, self.host, self.port), timeout_s
            )
            self.conn = conn
        assert conn is not None
        return conn

    def request(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()

    async def get(
        self, path: str, scanner: ChunkScanner | None, timeout_s: float
    ) -> SegmentConnection:
        """GET ``path``; the connection, its status and byte count set, once the body ended."""
        conn = await self.connect(timeout_s)
        await conn.send(self.request(path), scanner, timeout_s)
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
