"""Player QoE out of the edge: each request's CMCD with what the edge saw of its answer,
sent to the ``lm:{qoe}:events`` stream in batches.

Telemetry must never slow a segment: after the answer is written, the hit path appends
what it saw (a tuple: key, raw CMCD, status, size, timings) to a bounded ring (when full
the oldest goes, counted). Every ``flush_s`` or ``batch`` notes, the ring's notes are
pickled (C speed, ~1 µs a note) and written to a sender process of the node's own
(:mod:`edge.qoe_sender`), which parses the CMCD, encodes the events and sends them to
Redis: one pipeline of XADDs, each entry packing many events. Parsing and encoding on
the node's loop cost 20-60 µs an event, which put the segments' first byte with CMCD at
1.4-1.6x without (bench/qoe.py). A slow or absent Redis, or a sender that falls behind,
costs dropped events (counted), never the node's memory or latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from collections import deque
from dataclasses import dataclass

from edge.fill import Fill
from kernel import clock
from kernel.cmcd import CmcdStats, parse_headers, parse_query
from kernel.http.server import Request
from kernel.qoe_event import QoeEvent

log = logging.getLogger("edge.qoe")

SENDER_BACKLOG_BYTES = 4 << 20  # notes written to the sender but not yet read: past it, drop
FRAME_HEADER = 4  # bytes of a frame's length (big-endian) before its pickled notes
RESTART_S = 1.0  # a sender that died is started again after this


@dataclass(frozen=True)
class QoeConfig:
    redis_url: str
    batch: int = 500  # events per pipeline
    flush_s: float = 0.1  # longest an event waits in the ring
    ring: int = 50_000  # events held while Redis is slow or down


Headers = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
# what the hit path keeps of a request: its cache key, raw CMCD (query value, headers),
# status, size, time to first byte (ms) and when (wall clock, ms)
Seen = tuple[str, bytes | None, Headers | None, int, int, int, int]


def cmcd_headers(req: Request) -> Headers | None:
    """The request's four CMCD headers, None when it sent none."""
    headers = (req.cmcd_object, req.cmcd_request, req.cmcd_session, req.cmcd_status)
    return None if headers == (None, None, None, None) else headers


def frame(notes: list[Seen]) -> bytes:
    """Notes as one frame for the sender."""
    body = pickle.dumps(notes, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(FRAME_HEADER, "big") + body


def encode(seen: Seen, edge: str, region: str, stats: CmcdStats) -> bytes | None:
    """A noted request as an event line; None when its CMCD had nothing valid."""
    key, query, headers, status, size, ttfb_ms, ts_ms = seen
    cmcd = parse_headers(list(headers), stats) if headers is not None else {}
    if query is not None:
        parse_query(query, stats, cmcd)
    if not cmcd:
        return None
    channel, rung = _channel_rung(key)
    return QoeEvent(
        edge,
        region,
        channel,
        rung,
        status,
        size,
        ttfb_ms,
        ts_ms,
        br=_int(cmcd.get("br")),
        bl=_int(cmcd.get("bl")),
        mtp=_int(cmcd.get("mtp")),
        rtp=_int(cmcd.get("rtp")),
        bs=cmcd.get("bs") is True,
        su=cmcd.get("su") is True,
        sid=str(cmcd.get("sid", "")),
    ).encode()


@dataclass
class SenderReport:
    """What the sender said last (running totals since it started)."""

    sent: int = 0
    dropped: int = 0
    failed_batches: int = 0
    cmcd_dropped: int = 0

    @classmethod
    def parse(cls, line: bytes) -> SenderReport | None:
        try:
            sent, dropped, failed, cmcd = (int(n) for n in line.split())
        except ValueError:
            return None
        return cls(sent, dropped, failed, cmcd)

    def line(self) -> bytes:
        return b"%d %d %d %d\n" % (self.sent, self.dropped, self.failed_batches, self.cmcd_dropped)


class QoeEmitter:
    """The ring, and the task (:meth:`run`, the node's) that hands it to the sender."""

    def __init__(self, config: QoeConfig, edge: str, region: str) -> None:
        self.config = config
        self.edge = edge
        self.region = region
        self.ring: deque[Seen] = deque(maxlen=config.ring)
        self.handed = 0  # notes written to a sender
        self.lost = 0  # dropped here: ring full, sender behind or gone
        self.report = SenderReport()  # the running sender's totals
        self.earlier = SenderReport()  # totals of senders that have exited
        self._sender: asyncio.subprocess.Process | None = None
        self._wake = asyncio.Event()

    @property
    def sent(self) -> int:
        return self.report.sent + self.earlier.sent

    @property
    def dropped(self) -> int:
        return self.lost + self.report.dropped + self.earlier.dropped

    @property
    def failed_batches(self) -> int:
        return self.report.failed_batches + self.earlier.failed_batches

    @property
    def cmcd_dropped(self) -> int:
        return self.report.cmcd_dropped + self.earlier.cmcd_dropped

    def emit(self, seen: Seen) -> None:
        ring = self.ring
        if len(ring) == ring.maxlen:
            self.lost += 1  # the append below pushes the oldest out
        ring.append(seen)
        if len(ring) >= self.config.batch:
            self._wake.set()

    async def run(self) -> None:
        while True:
            sender = await self._start()
            reports = asyncio.create_task(self._read_reports(sender))
            try:
                await self._feed(sender)
            finally:
                reports.cancel()
                await self._stop(sender)
            await asyncio.sleep(RESTART_S)

    async def _feed(self, sender: asyncio.subprocess.Process) -> None:
        """Hand the ring to ``sender`` until it exits."""
        while sender.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_s)
            self._wake.clear()
            while self.ring and self.flush():
                pass

    def flush(self) -> bool:
        """Hand one batch to the sender; whether it took it (if not, it is counted dropped)."""
        ring = self.ring
        notes = [ring.popleft() for _ in range(min(len(ring), self.config.batch))]
        sender = self._sender
        pipe = sender.stdin if sender is not None and sender.returncode is None else None
        if pipe is None or pipe.is_closing():
            self.lost += len(notes)
            return False
        if pipe.transport.get_write_buffer_size() > SENDER_BACKLOG_BYTES:
            self.lost += len(notes)  # the sender is behind: the newest wait no longer
            return False
        pipe.write(frame(notes))
        self.handed += len(notes)
        return True

    async def _start(self) -> asyncio.subprocess.Process:
        self._sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.qoe_sender", "--redis-url", self.config.redis_url,
            "--edge", self.edge, "--region", self.region,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self._sender

    async def _read_reports(self, sender: asyncio.subprocess.Process) -> None:
        assert sender.stdout is not None
        while line := await sender.stdout.readline():
            report = SenderReport.parse(line)
            if report is not None:
                self.report = report

    async def _stop(self, sender: asyncio.subprocess.Process) -> None:
        """End ``sender`` (its stdin closed: it sends what it has and exits) and keep its
        totals."""
        with contextlib.suppress(OSError):
            if sender.stdin is not None:
                sender.stdin.close()
        try:
            async with asyncio.timeout(2):
                await sender.wait()
        except TimeoutError:
            sender.kill()
            await sender.wait()
        self.earlier = SenderReport(
            self.earlier.sent + self.report.sent,
            self.earlier.dropped + self.report.dropped,
            self.earlier.failed_batches + self.report.failed_batches,
            self.earlier.cmcd_dropped + self.report.cmcd_dropped,
        )
        self.report = SenderReport()
        if sender.returncode not in (0, None):
            log.warning("QoE sender exited with %s: started again", sender.returncode)


class QoeRecorder:
    """Notes each served request that carried CMCD once its answer is known; the sender
    (:mod:`edge.qoe_sender`) turns the notes into events, off the node's loop."""

    def __init__(self, edge: str, region: str, config: QoeConfig) -> None:
        self.edge = edge
        self.region = region
        self.emitter = QoeEmitter(config, edge, region)

    def observe(
        self,
        key: str,
        fill: Fill | None,
        cmcd: tuple[bytes | None, Headers | None],
        started: float,
        now: float,
    ) -> None:
        """A request answered from ``fill``: noted now when its size is known, else when
        the fill has its head and body (``now``, ``started``: loop time)."""
        if fill is None:
            return  # answered at the door (4xx): no object, nothing to say of QoE
        if fill.head and (fill.done or fill.length is not None):
            size = fill.length if fill.length is not None else fill.size
            self.note(key, cmcd, fill.status, size, now - started)
        else:
            pending = _Pending(self, key, cmcd, started)
            if fill.head:  # streaming a body still arriving: its head went out just now
                pending.ttfb_s = now - started
            fill.subscribe(pending)

    def note(
        self,
        key: str,
        cmcd: tuple[bytes | None, Headers | None],
        status: int,
        size: int,
        ttfb_s: float,
    ) -> None:
        query, headers = cmcd
        self.emitter.emit((key, query, headers, status, size, int(ttfb_s * 1000), clock.now_ms()))


class _Pending:
    """A fill's subscriber until its answer is known (head time, then size)."""

    def __init__(
        self,
        recorder: QoeRecorder,
        key: str,
        cmcd: tuple[bytes | None, Headers | None],
        started: float,
    ) -> None:
        self.recorder = recorder
        self.key = key
        self.cmcd = cmcd
        self.started = started
        self.ttfb_s = 0.0

    def on_head(self, fill: Fill) -> None:
        self.ttfb_s = max(0.0, fill.born - self.started)

    def on_data(self, fill: Fill, piece: bytes) -> None:
        pass

    def on_end(self, fill: Fill) -> None:
        self.recorder.note(self.key, self.cmcd, fill.status, fill.size, self.ttfb_s)

    def on_error(self, fill: Fill) -> None:
        unavailable = fill.held or fill.retry_after is not None
        status = fill.status if fill.head else (503 if unavailable else 502)
        self.recorder.note(self.key, self.cmcd, status, fill.size, self.ttfb_s)


def _channel_rung(key: str) -> tuple[str, str]:
    """``/live/{channel}/{epoch}/{rep}/{name}`` -> (channel, rep); a manifest has no rep."""
    parts = key.split("/", 6)
    channel = parts[2] if len(parts) > 3 else ""
    rung = parts[4] if len(parts) > 5 else ""
    return channel, rung


def _int(value: object) -> int:
    return value if type(value) is int else -1
