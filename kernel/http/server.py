"""A lean HTTP/1.1 server for the data plane: asyncio protocol + the llhttp parser.

The hit path is synchronous from the parsed request to ``transport.writelines``:
no task, no stream objects, no copy of the body.  Abuse is bounded here, before any
handler sees a request: request head size (431), target length (414), body size
(413), parser errors (400), and time (a request head must arrive within
``head_timeout_s`` of its first byte; an idle keep-alive connection lives
``idle_timeout_s``), all checked by one sweeper, not a timer per request.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import deque
from typing import Protocol, cast

import httptools

from kernel.http.cors import CorsPolicy, wire
from kernel.http.errors import ERROR_CACHE_CONTROL, ERROR_CONTENT_TYPE, error_text
from kernel.http.request import WANTED, WANTED_LENGTHS, Limits, Request

__all__ = ["Connection", "Handler", "HttpServer", "Limits", "Request", "status_line"]

log = logging.getLogger(__name__)

REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
ERROR_EXTRA = f"Cache-Control: {ERROR_CACHE_CONTROL}\r\n".encode()
ERROR_TYPE = ERROR_CONTENT_TYPE.encode()


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()


class Handler(Protocol):
    def handle(self, conn: Connection, req: Request) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection; answers its requests strictly in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req: Request | None = None
        self.in_head = False
        self.head_bytes = 0
        self.busy = False  # a response is being written
        self.keep_alive = True
        self.http11 = True
        self.pending: deque[Request] = deque()
        self.deadline = 0.0
        self.on_lost: object | None = None  # a callable the handler sets for a live response
        self.closed = False
        self.refuse = 0  # a status to answer the current request with instead of handling it
        self.raw_head = 0  # bytes received while a request head is incomplete
        self.paused = False  # reading paused while pipelined requests wait

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        self.deadline = self.server.coarse_now + self.limits.head_timeout_s
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if not self.server.connections:
            self.server.empty.set()
        callback, self.on_lost = self.on_lost, None
        if callable(callback):
            callback()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reject(400)
            return
        except httptools.HttpParserError:
            self.reject(400)
            return
        if self.in_head:  # a head still incomplete: bound what the parser may buffer
            self.raw_head += len(data)
            if self.refuse or self.raw_head > self.limits.max_head_bytes:
                self.reject(self.refuse or 431)

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.req = Request()
        self.in_head = True
        self.head_bytes = 0
        self.refuse = 0
        if not self.busy:
            self.deadline = self.server.coarse_now + self.limits.head_timeout_s

    def on_url(self, url: bytes) -> None:
        req = self.req
        assert req is not None
        target = req.target
        if len(target) + len(url) > self.limits.max_target_bytes:
            self.refuse = self.refuse or 414
            return
        req.target = target + url if target else url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_head_bytes:
            self.refuse = self.refuse or 431
            return
        attr = WANTED.get(name)
        if attr is None:
            if len(name) not in WANTED_LENGTHS:
                return
            attr = WANTED.get(name.lower())
        if attr is not None and self.req is not None:
            setattr(self.req, attr, value)

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        self.in_head = False
        self.head_bytes = self.raw_head = 0
        parser = self.parser
        req.method = method = parser.get_method()
        if not parser.should_keep_alive():
            req.keep_alive = False
        if parser.get_http_version() != "1.1":
            req.http11 = False
        if method == b"POST":
            req.body = bytearray()

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is None or req.body is None:
            return
        if len(req.body) + len(body) > self.limits.max_body_bytes:
            self.refuse = self.refuse or 413
            return
        req.body += body

    def on_message_complete(self) -> None:
        req, self.req = self.req, None
        if req is None or self.closed:
            return
        if self.refuse:
            self.reject(self.refuse)
            return
        if req.host is None and req.http11:
            self.reject(400)
            return
        if self.busy:
            self.pending.append(req)
            if self.transport is not None and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            if len(self.pending) > self.limits.max_pipelined:
                self.close()
            return
        self._dispatch(req)

    # -- response side -------------------------------------------------------------------

    def _dispatch(self, req: Request) -> None:
        self.busy = True
        self.keep_alive = req.keep_alive and not self.server.draining
        self.http11 = req.http11
        try:
            self.server.handler.handle(self, req)
        except Exception:
            log.exception("handler failed")
            if self.busy:
                self.abort()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, parts: list[bytes] | list[bytes | memoryview]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def too_far_behind(self) -> bool:
        transport = self.transport
        return transport is not None and (
            transport.get_write_buffer_size() > self.limits.max_write_buffer
        )

    def connection_header(self) -> bytes:
        return b"" if self.keep_alive else b"Connection: close\r\n"

    def finish(self) -> None:
        """The current response is complete: next pipelined request, or idle, or close."""
        self.on_lost = None
        self.busy = False
        if not self.keep_alive or self.closed:
            self.close()
            return
        self.deadline = self.server.coarse_now + self.limits.idle_timeout_s
        if self.pending:
            self._dispatch(self.pending.popleft())
            return
        if self.paused:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def simple(
        self,
        status: int,
        body: bytes = b"",
        extra: bytes = b"",
        content_type: bytes = b"text/plain",
    ) -> None:
        """A whole small response, then :meth:`finish`."""
        if status >= 400 and status not in (404, 410, 416):
            self.keep_alive = False
        head = b"".join(
            (
                status_line(status),
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n",
                self.server.cors,
                extra,
                self.server.date_header,
                self.connection_header(),
                b"\r\n",
            )
        )
        self.writelines([head, body])
        self.finish()

    def error(self, status: int, reason: str, extra: bytes = b"") -> None:
        """A short error answer (:mod:`kernel.http.errors`), then :meth:`finish`."""
        body = error_text(reason).encode()
        self.simple(status, body, ERROR_EXTRA + extra, ERROR_TYPE)

    def reject(self, status: int) -> None:
        """Answer a broken or abusive request and close the connection."""
        if self.closed:
            return
        self.keep_alive = False
        self.busy = True
        self.error(status, REASONS.get(status, ""))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection so the client sees a truncated response, not a short one."""
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


class HttpServer:
    """Serves ``handler``; every answer carries the ``cors`` policy's response headers."""

    def __init__(self, handler: Handler, cors: CorsPolicy, limits: Limits | None = None) -> None:
        self.handler = handler
        self.cors = wire(cors.response_headers())
        self.limits = limits or Limits()
        self.connections: set[Connection] = set()
        self.draining = False
        self.empty = asyncio.Event()
        self.date_header = b""
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._tick = min(1.0, self.limits.head_timeout_s / 4, self.limits.idle_timeout_s / 4)
        # the loop's clock at the next sweep: what connection deadlines are counted from (a
        # deadline is only ever checked by the sweeper, so reading the clock per request buys
        # no precision)
        self.coarse_now = 0.0
        self._update_date()

    def now(self) -> float:
        return self._loop.time()

    def _update_date(self) -> None:
        self.date_header = f"Date: {email.utils.formatdate(usegmt=True)}\r\n".encode()
        self.coarse_now = self._loop.time() + self._tick

    async def start(self, host: str, port: int) -> int:
        self._server = await self._loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, backlog=4096
        )
        self._sweeper = asyncio.create_task(self._sweep())
        sock = self._server.sockets[0]
        bound: int = sock.getsockname()[1]
        return bound

    async def _sweep(self) -> None:
        """Once per tick: refresh the Date header, close connections past their deadline."""
        while True:
            await asyncio.sleep(self._tick)
            self._update_date()
            now = self.now()
            for conn in list(self.connections):
                if not conn.busy and conn.deadline < now:
                    if conn.in_head:
                        conn.reject(408)
                    else:
                        conn.close()

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    async def drain(self, timeout_s: float) -> None:
        """Stop taking connections; let responses in flight finish, close idle ones."""
        self.draining = True
        self.stop_listening()
        for conn in list(self.connections):
            conn.keep_alive = False
            if not conn.busy:
                conn.close()
        if self.connections:
            self.empty.clear()
            try:
                await asyncio.wait_for(self.empty.wait(), timeout_s)
            except TimeoutError:
                log.warning("drain: %d connections still open", len(self.connections))

    async def close(self) -> None:
        self.stop_listening()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
