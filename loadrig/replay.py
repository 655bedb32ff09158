"""Request logs: read access-log lines, count origin requests per object, replay time-scaled.

The format is the Common/Combined Log Format that the origin (aiohttp) writes, with the
Python logging timestamp in front when present (millisecond precision; else the CLF
``[25/Nov/2026:17:03:38 +0000]`` one):

    2026-11-25 17:03:38,345 aiohttp.access 127.0.0.1 [25/Nov/2026:17:03:38 +0000]
        "GET /live/demo/1795626208592/v360/7.m4s HTTP/1.1" 200 151204 "-" "..."

:func:`replay` re-issues the recorded GETs against a node, ``speed`` times faster (or
slower), optionally rebased onto the current epoch and live edge, so a recorded spike
can be played again against a new stack.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

LINE = re.compile(
    r"^(?:(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) )?.*?"
    r'\[(?P<clf>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
)
MEDIA = re.compile(
    r"/live/(?P<channel>[^/]+)/(?P<epoch>[^/]+)/(?P<rep>[^/]+)/(?P<n>\d+|init)\.(?:m4s|mp4)$"
)


@dataclass(frozen=True)
class LoggedRequest:
    t: float  # UTC seconds
    method: str
    path: str
    status: int
    size: int


def parse_line(line: str) -> LoggedRequest | None:
    """One access-log line, or None when the line is something else (pure)."""
    match = LINE.search(line)
    if match is None:
        return None
    if match["asctime"]:
        # the logging module writes local time; the stack runs with TZ as the host's
        stamp = datetime.strptime(match["asctime"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    else:
        stamp = datetime.strptime(match["clf"], "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC).timestamp()
    size = 0 if match["size"] == "-" else int(match["size"])
    return LoggedRequest(stamp, match["method"], match["path"], int(match["status"]), size)


def parse_log(lines: Iterable[str]) -> list[LoggedRequest]:
    return [r for r in map(parse_line, lines) if r is not None]


def media_key(path: str) -> str | None:
    """``epoch/rep/n`` of a live media path (token prefix ignored), else None."""
    match = MEDIA.search(path)
    return None if match is None else f"{match['epoch']}/{match['rep']}/{match['n']}"


def requests_per_object(
    requests: Iterable[LoggedRequest], t0: float = 0.0, t1: float = float("inf")
) -> Counter[str]:
    """How many times each live media object was requested between ``t0`` and ``t1``."""
    out: Counter[str] = Counter()
    for r in requests:
        key = media_key(r.path)
        if key is not None and r.method == "GET" and t0 <= r.t <= t1:
            out[key] += 1
    return out


def schedule(requests: list[LoggedRequest], speed: float) -> list[tuple[float, str]]:
    """``(offset_s, path)`` of every GET, offsets from the first divided by ``speed``."""
    if speed <= 0:
        raise ValueError("speed must be > 0")
    gets = sorted((r for r in requests if r.method == "GET"), key=lambda r: r.t)
    if not gets:
        return []
    start = gets[0].t
    return [((r.t - start) / speed, r.path) for r in gets]


def rebase(path: str, epoch: str, shift: int, prefix: str = "") -> str:
    """``path`` moved onto ``epoch`` with segment numbers shifted by ``shift`` (pure)."""
    match = MEDIA.search(path)
    if match is None:
        return prefix + path
    n = match["n"] if match["n"] == "init" else str(int(match["n"]) + shift)
    ext = "mp4" if n == "init" else "m4s"
    return f"{prefix}/live/{match['channel']}/{epoch}/{match['rep']}/{n}.{ext}"


@dataclass
class ReplayResult:
    sent: int = 0
    statuses: Counter[int] | None = None
    errors: int = 0
    late_s: float = 0.0  # worst lateness of a request against its schedule
    wall_s: float = 0.0


async def replay(plan: list[tuple[float, str]], base: str, concurrency: int = 512) -> ReplayResult:
    """Issue every planned GET against ``base`` at its offset; bodies are read and dropped."""
    result = ReplayResult(statuses=Counter())
    gate = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(http: aiohttp.ClientSession, offset: float, path: str) -> None:
        delay = offset - (time.monotonic() - start)
        if delay > 0:
            await asyncio.sleep(delay)  # a timer: the request's moment in the log
        async with gate:
            result.late_s = max(result.late_s, time.monotonic() - start - offset)
            try:
                async with http.get(base + path) as resp:
                    async for _ in resp.content.iter_any():
                        pass
                    assert result.statuses is not None
                    result.statuses[resp.status] += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                result.errors += 1
            result.sent += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(*(one(http, o, p) for o, p in plan))
    result.wall_s = time.monotonic() - start
    return result
