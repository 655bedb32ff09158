"""Answering from a fill: whole from the cache, or streamed while it is still filling.

A stored object's headers are rendered to wire bytes once per object, and the
whole head of a keep-alive hit once per second (its Date line, a mutable object's
Age), so a hit is a dictionary lookup and one write. CMSD (:mod:`kernel.cmsd`) rides
along the same way: ``CMSD-Static`` in the object's rendered headers, ``CMSD-Dynamic``
renewed with the Date line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge import ranges
from edge.fill import Fill
from edge.metrics import Counters
from kernel.cmsd import DYNAMIC, STATIC, dynamic_value, held_value, static_value
from kernel.http.cors import EDGE, wire
from kernel.http.hold import HOLD_EXPIRED, HOLD_HEADER
from kernel.http.server import Connection, Request, status_line

# A hit whose head and body together are this small is sent as one buffer: one copy, and
# the transport's direct-write path instead of its buffered writelines (bench/edge_cached.py).
SMALL_WRITE_BYTES = 16 << 10
HIT = b"X-Cache: HIT\r\n"
STALE = b"X-Cache: STALE\r\n"
MISS = b"X-Cache: MISS\r\n"
CORS = wire(EDGE.response_headers())
HELD_EXPIRED_EXTRA = f"{HOLD_HEADER}: {HOLD_EXPIRED}\r\n".encode()
DURESS_LOAD = 0.9  # connections / capacity at which the node says it is under duress
HELD_MIN_MS = 1  # a wait for the head shorter than this is no hold


class Cmsd:
    """The node's CMSD header lines. Dynamic: renewed when the Date line is (once a
    second) from the node's connections and egress over the last interval; ``etp`` is
    the egress per open connection then, a floor of what a connection can get (players
    idle between requests), so the player is set not to weigh it (player/player.js)."""

    def __init__(
        self,
        node: str,
        counters: Counters,
        connections: Callable[[], int],
        capacity: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.counters = counters
        self.connections = connections
        self.capacity = max(1, capacity)
        self.monotonic = monotonic
        self._date = b""
        self._at = monotonic()
        self._sent = counters.bytes_out
        self.duress = False
        self.etp_kbps: int | None = None
        self.hit_line = b""  # CMSD-Dynamic of an answer from the cache (rd=0)

    def static(self, path: str) -> bytes:
        return f"{STATIC}: {static_value(self.node, path)}\r\n".encode()

    def dynamic(self, date: bytes) -> bytes:
        """The line of a cache hit in the second of ``date`` (one render per second)."""
        if date is not self._date:
            self._renew(date)
        return self.hit_line

    def dynamic_after(self, waited_s: float) -> bytes:
        """The lines of an answer whose head waited ``waited_s`` (a miss, a held request)."""
        rd_ms = int(waited_s * 1000)
        line = dynamic_value(self.node, duress=self.duress, etp_kbps=self.etp_kbps, rd_ms=rd_ms)
        held = f"{STATIC}: {held_value(rd_ms)}\r\n" if rd_ms >= HELD_MIN_MS else ""
        return f"{DYNAMIC}: {line}\r\n{held}".encode()

    def _renew(self, date: bytes) -> None:
        now, sent, open_ = self.monotonic(), self.counters.bytes_out, self.connections()
        elapsed = now - self._at
        if elapsed > 0:
            self.etp_kbps = int((sent - self._sent) * 8 / 1000 / elapsed / max(1, open_))
        self._date, self._at, self._sent = date, now, sent
        self.duress = open_ >= DURESS_LOAD * self.capacity
        line = dynamic_value(self.node, duress=self.duress, etp_kbps=self.etp_kbps, rd_ms=0)
        self.hit_line = f"{DYNAMIC}: {line}\r\n".encode()


def object_headers(fill: Fill, cmsd: Cmsd) -> bytes:
    """The stored headers of an object as wire bytes, rendered once per object."""
    if not fill.wire_head:
        lines = [f"{name.title()}: {value}\r\n".encode() for name, value in fill.headers]
        fill.wire_head = b"".join(
            [*lines, CORS, b"Accept-Ranges: bytes\r\n", cmsd.static(fill.key)]
        )
    return fill.wire_head


def failed(conn: Connection, fill: Fill) -> None:
    """Answer a request whose fill failed before its head: the encoder is late (503, marked
    so a child node passes it on instead of failing over), the upstream is unavailable for
    a while (503 with its ``Retry-After``), or no parent could serve it (502)."""
    if fill.held:
        conn.error(503, "segment not produced in time", extra=HELD_EXPIRED_EXTRA)
    elif fill.retry_after is not None:
        conn.error(503, "upstream unavailable", extra=b"Retry-After: %d\r\n" % fill.retry_after)
    else:
        conn.error(502, "upstream unavailable")


def head(
    fill: Fill,
    cmsd: Cmsd,
    status: int,
    size: int,
    extra: bytes,
    age: int,
    tag: bytes,
    date: bytes,
    connection: bytes,
) -> bytes:
    return b"".join(
        (
            status_line(status) if status != 200 else b"HTTP/1.1 200 OK\r\n",
            object_headers(fill, cmsd),
            b"Content-Length: %d\r\n" % size,
            extra,
            b"" if age < 0 else b"Age: %d\r\n" % age,
            tag,
            date,
            connection,
            b"\r\n",
        )
    )


def hit_head(conn: Connection, fill: Fill, now: float, cmsd: Cmsd) -> bytes:
    """The head of a whole fresh object on a keep-alive connection: built once per second
    (the Date and CMSD-Dynamic lines; the Age of a mutable object) and shared by every
    hit in between."""
    date = conn.server.date_header
    age = -1 if fill.policy.immutable else int(now - fill.born)
    if fill.hit_date is not date or fill.hit_age != age:
        dynamic = cmsd.dynamic(date)
        fill.hit_head = head(fill, cmsd, fill.status, fill.size, dynamic, age, HIT, date, b"")
        fill.hit_date = date
        fill.hit_age = age
    return fill.hit_head


class Responses:
    """The node's answers from fills; counts the body bytes sent."""

    def __init__(self, counters: Counters, cmsd: Cmsd) -> None:
        self.counters = counters
        self.cmsd = cmsd
        self._frame_of: bytes | None = None  # the piece last framed for chunked transfer-coding
        self._frame = b""

    def answer(self, conn: Connection, req: Request, fill: Fill, now: float, tag: bytes) -> None:
        if not fill.done or fill.error is not None:
            if fill.done:
                failed(conn, fill)
                return
            span = None
            if req.range is not None and ranges.honoured(req.if_range, fill.validator):
                span = ranges.closed(req.range)
            if span is not None:
                RangeWaiter(self, conn, req, span).attach(fill)
                return
            Responder(self, conn, req).attach(fill)
            return
        if tag is HIT and req.range is None and conn.keep_alive:
            self.send(conn, req, hit_head(conn, fill, now, self.cmsd), fill.pieces, fill.size)
            return
        size = fill.size
        status = fill.status
        body: list[bytes] | list[memoryview] = fill.pieces
        extra = b""
        wanted = req.range if ranges.honoured(req.if_range, fill.validator) else None
        if wanted is not None and status == 200:
            try:
                span = ranges.parse(wanted, size)
            except ranges.Unsatisfiable:
                conn.simple(416, extra=b"Content-Range: bytes */%d\r\n" % size)
                return
            if span is not None:
                first, last = span
                status = 206
                body = ranges.slices(fill.pieces, first, last)
                extra = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size)
                size = last - first + 1
        age = -1 if fill.policy.immutable else int(now - fill.born)
        date = conn.server.date_header
        extra += self.cmsd.dynamic(date)
        whole = head(fill, self.cmsd, status, size, extra, age, tag, date, conn.connection_header())
        self.send(conn, req, whole, body, size)

    def send(
        self,
        conn: Connection,
        req: Request,
        head: bytes,
        body: list[bytes] | list[memoryview],
        size: int,
    ) -> None:
        if req.method == b"HEAD":
            conn.write(head)
        else:
            if len(body) == 1 and size <= SMALL_WRITE_BYTES:
                conn.write(head + body[0])
            else:
                conn.writelines([head, *body])
            self.counters.bytes_out += size
        conn.finish()

    def frame(self, piece: bytes) -> bytes:
        """``piece`` as one frame of HTTP/1.1 chunked transfer-coding, framed once for all
        the waiters it goes to."""
        if piece is not self._frame_of:
            self._frame_of = piece
            self._frame = b"%x\r\n%b\r\n" % (len(piece), piece)
        return self._frame


class RangeWaiter:
    """A closed byte range of an object still filling (an LL-HLS part of a live segment):
    answered 206 as soon as its last byte has arrived, not when the segment is whole.

    Anything but a 200 from upstream is answered as the whole object would be.
    """

    __slots__ = ("conn", "first", "last", "req", "responses")

    def __init__(
        self, responses: Responses, conn: Connection, req: Request, span: tuple[int, int]
    ) -> None:
        self.responses = responses
        self.conn = conn
        self.req = req
        self.first, self.last = span

    def attach(self, fill: Fill) -> None:
        self.conn.on_lost = lambda: fill.unsubscribe(self)
        if not self._answered(fill):
            fill.subscribe(self)

    def _answered(self, fill: Fill) -> bool:
        """Answer now if the bytes (or a head that is no 200) are there; whether it did."""
        if not fill.head:
            return False
        if fill.status != 200:
            fill.unsubscribe(self)
            Responder(self.responses, self.conn, self.req).attach(fill)
            return True
        if fill.size <= self.last:
            return False
        fill.unsubscribe(self)
        first, last = self.first, self.last
        total = b"%d" % fill.length if fill.length is not None else b"*"
        extra = b"Content-Range: bytes %d-%d/%b\r\n" % (first, last, total)
        age = -1 if fill.policy.immutable else 0
        conn = self.conn
        size = last - first + 1
        date = conn.server.date_header
        cmsd = self.responses.cmsd
        extra += cmsd.dynamic(date)
        whole = head(fill, cmsd, 206, size, extra, age, MISS, date, conn.connection_header())
        body = ranges.slices(fill.pieces, first, last)
        self.responses.send(conn, self.req, whole, body, size)
        return True

    def on_head(self, fill: Fill) -> None:
        self._answered(fill)

    def on_data(self, fill: Fill, piece: bytes) -> None:
        self._answered(fill)

    def on_end(self, fill: Fill) -> None:
        # The object ended before the range's last byte: answered as a whole one is (416).
        self.responses.answer(self.conn, self.req, fill, 0.0, MISS)

    def on_error(self, fill: Fill) -> None:
        failed(self.conn, fill)


class Responder:
    """One request waiting on a fill still in flight: streams its pieces as they arrive."""

    __slots__ = ("began", "conn", "framed", "head_only", "responses", "started")

    def __init__(self, responses: Responses, conn: Connection, req: Request) -> None:
        self.responses = responses
        self.began = time.monotonic()  # CMSD: how long its head waited
        self.conn = conn
        self.head_only = req.method == b"HEAD"
        # sent with Transfer-Encoding: chunked (its frames hold pieces, not CMAF chunks)
        self.framed = False
        self.started = False

    def attach(self, fill: Fill) -> None:
        self.conn.on_lost = lambda: fill.unsubscribe(self)
        if fill.head:
            self.on_head(fill)
            if self.head_only:
                return
            if fill.pieces:
                self._send(b"".join(fill.pieces) if len(fill.pieces) > 1 else fill.pieces[0])
        fill.subscribe(self)

    def on_head(self, fill: Fill) -> None:
        conn = self.conn
        self.started = True
        cmsd = self.responses.cmsd
        waited = time.monotonic() - self.began
        parts = [status_line(fill.status), object_headers(fill, cmsd), cmsd.dynamic_after(waited)]
        if fill.length is not None:
            parts.append(b"Content-Length: %d\r\n" % fill.length)
        elif conn.http11:
            self.framed = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            conn.keep_alive = False
        parts += [MISS, conn.server.date_header, conn.connection_header(), b"\r\n"]
        if self.head_only:
            if self.framed:
                parts.append(b"0\r\n\r\n")
            conn.writelines(parts)
            fill.unsubscribe(self)
            conn.finish()
            return
        conn.writelines(parts)

    def _send(self, piece: bytes) -> None:
        if self.framed:
            self.conn.write(self.responses.frame(piece))
        else:
            self.conn.write(piece)
        self.responses.counters.bytes_out += len(piece)

    def on_data(self, fill: Fill, piece: bytes) -> None:
        self._send(piece)
        if self.conn.too_far_behind():
            fill.unsubscribe(self)
            self.conn.abort()

    def on_end(self, fill: Fill) -> None:
        if self.framed:
            self.conn.write(b"0\r\n\r\n")
        self.conn.finish()

    def on_error(self, fill: Fill) -> None:
        if self.started:
            self.conn.abort()  # the client must see a truncated body, never a short one
        else:
            failed(self.conn, fill)
