"""Shared helpers of the benchmarks: child processes, readiness, figures, live viewers.

- :class:`Procs` starts children (optionally pinned with ``taskset``) and stops them all,
  newest first, SIGTERM then SIGKILL after a grace period; it is a context manager, so a
  failing bench leaves nothing behind.
- :func:`summary` / :func:`percentile` and :func:`print_result` (the one ``RESULT {json}``
  line every bench ends with).
- :class:`LiveViewer`: an LL-DASH segment reader on a raw asyncio protocol with the llhttp
  response parser (chunked transfer decoded in C).  It counts body bytes and notes the
  arrival time of every completed ``mdat`` (one CMAF chunk) without keeping the body, so
  one client process can hold thousands of viewers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import cast

import httptools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livemesh.processes import stop_processes  # noqa: E402
from livemesh.redis_server import redis_client  # noqa: E402
from livemesh.stack import free_port, wait_ready  # noqa: E402
from loadrig.looplag import LoopLag  # noqa: E402

__all__ = ["ROOT", "LoopLag", "free_port", "wait_ready"]

CLI = [sys.executable, "-m", "livemesh.cli"]
STOP_GRACE_S = 10.0


# -- processes ---------------------------------------------------------------------------


def pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    """``command`` run on the CPU list ``cpus`` (``taskset -c``), or as is."""
    if cpus is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", cpus, *command]


class Procs:
    """The children of one bench run."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.log_dir = log_dir  # children's stderr goes to {log_dir}/{name}.log when set

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        cpus: str | None = None,
        ready: str | None = None,
        quiet: bool = True,
        timeout_s: float = 60.0,
    ) -> subprocess.Popen[bytes]:
        out = subprocess.DEVNULL if quiet else None
        if self.log_dir is None:
            proc = subprocess.Popen(pinned(command, cpus), stdout=out, stderr=out)
        else:
            with open(os.path.join(self.log_dir, f"{name}.log"), "wb") as log:
                proc = subprocess.Popen(pinned(command, cpus), stdout=out, stderr=log)
        self.children.append((name, proc))
        if ready is not None and not wait_ready(ready, threading.Event(), timeout_s):
            raise SystemExit(f"{name} did not become ready at {ready}")
        return proc

    def edge(
        self,
        name: str,
        tier: str,
        parents: Sequence[str],
        fallbacks: Sequence[str] = (),
        *,
        tokens: bool = True,
        cpus: str | None = None,
    ) -> str:
        """Start a ``livemesh edge`` node on a free port; its base URL once it answers."""
        port = free_port()
        command = [*CLI, "edge", "--host", "127.0.0.1", "--port", str(port), "--name", name]
        command += ["--tier", tier, "--log-level", "WARNING"]
        command += [a for p in parents for a in ("--parent", p)]
        command += [a for p in fallbacks for a in ("--fallback", p)]
        if not tokens:
            command.append("--no-tokens")
        base = f"http://127.0.0.1:{port}"
        self.start(name, command, cpus=cpus, ready=f"{base}/healthz")
        return base

    def origin(self, redis_url: str, *, cpus: str | None = None) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [*CLI, "origin", "--port", str(port), "--redis-url", redis_url]
        self.start("origin", command, cpus=cpus, ready=f"{base}/time")
        return base

    def channel(self, name: str, redis_url: str, *, cpus: str | None = None) -> None:
        self.start("channel", [*CLI, "channel", name, "--redis-url", redis_url], cpus=cpus)

    def log_lines(self, name: str, needle: str) -> list[str]:
        """Lines of child ``name``'s log containing ``needle`` (with ``log_dir``)."""
        if self.log_dir is None:
            return []
        path = Path(self.log_dir) / f"{name}.log"
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if needle in line]

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each child, by name."""
        return {name: process_cpu(proc.pid) for name, proc in self.children}

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}")

    def stop(self) -> None:
        stop_processes([proc for _name, proc in reversed(self.children)], STOP_GRACE_S)
        self.children.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's (and so its children's) open-file limit towards ``wanted``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def loadavg() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} cores)"


# -- metrics -------------------------------------------------------------------------------


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of every sample of ``name`` (whose label text contains ``labels``)."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(m.group(2)) for m in pattern.finditer(text) if labels in (m.group(1) or ""))


def origin_requests(origin: str) -> int:
    """Responses the origin has sent (every status), from its own /metrics."""
    return int(metric_sum(scrape(f"{origin}/metrics"), "livemesh_origin_responses_total"))


def edge_fetches(node: str) -> int:
    """Requests this node has sent to its parents, from its own /metrics."""
    return int(metric_sum(scrape(f"{node}/metrics"), "livemesh_edge_upstream_fetches_total"))


# -- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(max(values), 2),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


def print_result(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# -- live viewers --------------------------------------------------------------------------


class MdatCounter:
    """Follows top-level ISO-BMFF boxes across reads; reports each completed ``mdat``.

    Only box headers are looked at (at most 16 bytes kept), never the payload.
    """

    __slots__ = ("head", "remaining", "type")

    def __init__(self) -> None:
        self.head = b""  # an incomplete box header
        self.remaining = 0  # bytes of the current box still to come
        self.type = b""

    def feed(self, data: bytes | memoryview) -> int:
        done = 0
        view = memoryview(data)
        while view:
            if self.remaining:
                take = min(self.remaining, len(view))
                self.remaining -= take
                view = view[take:]
                if not self.remaining and self.type == b"mdat":
                    done += 1
                continue
            need = 16 if len(self.head) >= 8 and self.head[:4] == b"\0\0\0\1" else 8
            take = min(need - len(self.head), len(view))
            self.head += bytes(view[:take])
            view = view[take:]
            if len(self.head) == 8 and self.head[:4] == b"\0\0\0\1":
                continue  # a 64-bit size follows
            if len(self.head) < need:
                continue
            size = struct.unpack(">I", self.head[:4])[0]
            if size == 1:
                size = struct.unpack(">Q", self.head[8:16])[0]
            self.type = self.head[4:8]
            self.remaining = max(0, size - len(self.head))
            self.head = b""
            if not self.remaining and self.type == b"mdat":
                done += 1
        return done


class _Conn(asyncio.Protocol):
    """A keep-alive client connection: one GET at a time, body counted and split into chunks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.done: asyncio.Future[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.counter = MdatCounter()
        self.chunks: list[float] = []  # wall time (s) each chunk completed
        self.first_byte = 0.0
        self.last_byte = 0.0
        self.bytes = 0
        self.keep_alive = True

    def send(self, request: bytes) -> asyncio.Future[None]:
        self.reset()
        self.done = asyncio.get_running_loop().create_future()
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
        self._end(exc or ConnectionError("connection closed before the body ended"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        now = time.time()
        if not self.bytes:
            self.first_byte = now
        self.last_byte = now
        self.bytes += len(body)
        for _ in range(self.counter.feed(body)):
            self.chunks.append(now)

    def on_message_complete(self) -> None:
        self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        if self.done is not None and not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


class LiveViewer:
    """Reads segments ``first .. last`` of one representation, one after the other.

    One keep-alive connection (reopened if the server closes it).  For each chunk it
    records ``(segment, chunk_index, arrival_s)``, for each segment ``(segment,
    requested_s, first_byte_s)`` and the time of its last byte; bodies are only counted.
    """

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix  # e.g. "/t/TOKEN/live/ch/EPOCH/v360"
        self.chunks: list[tuple[int, int, float]] = []
        self.segments: list[tuple[int, float, float]] = []
        self.last_bytes: dict[int, float] = {}  # segment -> wall time its last byte arrived
        self.bytes = 0
        self.errors: list[str] = []
        self.conn: _Conn | None = None

    async def connect(self) -> _Conn:
        """The open keep-alive connection, (re)opened when needed (so a bench can open it
        ahead of the request it times)."""
        conn = self.conn
        if conn is None or conn.lost or not conn.keep_alive:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Conn, self.host, self.port)
            self.conn = conn
        return conn

    async def get(self, number: int) -> None:
        path = f"{self.prefix}/{number}.m4s"
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        conn = await self.connect()
        requested = time.time()
        await conn.send(request)
        if conn.status != 200:
            raise RuntimeError(f"{path}: status {conn.status}")
        self.segments.append((number, requested, conn.first_byte))
        self.last_bytes[number] = conn.last_byte
        self.chunks += [(number, k, t) for k, t in enumerate(conn.chunks)]
        self.bytes += conn.bytes

    async def play(self, first: int, last: int, keep_going: bool = False) -> None:
        """Read the segments in turn; on a failure stop, or with ``keep_going`` go on."""
        try:
            for number in range(first, last + 1):
                try:
                    await self.get(number)
                except (OSError, RuntimeError, httptools.HttpParserError) as exc:
                    self.errors.append(f"{number}: {type(exc).__name__} {exc}")
                    if not keep_going:
                        return
        finally:
            if self.conn is not None and self.conn.transport is not None:
                self.conn.transport.close()


# -- a live channel ------------------------------------------------------------------------


async def wait_live(redis_url: str, channel: str, rep: str, timeout_s: float = 60.0) -> str:
    """The channel's current epoch id, once ``rep`` has published its first chunk."""
    from live.state import ChannelStore

    redis = redis_client(redis_url)
    store = ChannelStore(redis, channel)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            epoch = await store.current_epoch()
            if epoch is not None and await store.position(epoch.id, rep) is not None:
                return epoch.id
            await asyncio.sleep(0.05)  # the channel process gives no other start signal
    finally:
        await redis.aclose()
    raise SystemExit(f"channel {channel} published nothing for {rep} in {timeout_s} s")


async def next_segment(redis_url: str, channel: str, epoch: str, rep: str) -> int:
    """Wait for ``rep`` to start a new segment; the number of the one after it (the next)."""
    from live.state import ChannelStore

    redis = redis_client(redis_url)
    store = ChannelStore(redis, channel)
    try:
        start = await store.position(epoch, rep)
        assert start is not None
        while True:
            now = await store.position(epoch, rep)
            if now is not None and now.segment != start.segment:
                return now.segment + 1
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()


async def stored_at(
    redis_url: str, channel: str, epoch: str, rep: str
) -> dict[tuple[int, int], int]:
    """When Redis stored each chunk of ``rep`` (ms, the server's clock in the event id)."""
    redis = redis_client(redis_url)
    try:
        # (the client does not decode replies: ids and fields are bytes)
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(f"lm:{{{channel}}}:events")
        )
    finally:
        await redis.aclose()
    out = {}
    for entry_id, fields in entries:
        if fields[b"e"].decode() == epoch and fields[b"r"].decode() == rep:
            out[(int(fields[b"n"]), int(fields[b"k"]))] = int(entry_id.split(b"-")[0])
    return out


def chunk_times(stored: dict[tuple[int, int], int]) -> dict[int, list[int]]:
    """Per segment, the storage times of its chunks in the order they were published.

    A reader's i-th ``mdat`` of a segment is the i-th chunk stored (the origin serves a
    segment's list in order); the packager's chunk indices may skip one when the encoder
    fell behind, so the ordinal, not the index, is what matches.
    """
    out: dict[int, list[int]] = {}
    for (n, _k), ms in sorted(stored.items()):
        out.setdefault(n, []).append(ms)
    return out
