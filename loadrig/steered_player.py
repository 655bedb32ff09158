"""A small live player that follows content steering and reports CMCD: enough of a
player for QoE steering to be measured against (bench/qoe.py, the steering tests).

It plays one segment URL path over and over as a low-latency player pulls chunks:
each answer adds ``chunk_s`` of media to a buffer that drains in real time, the
buffer is kept at ``target_s`` (the live edge allows no more), and a request that
finds it empty reports ``bs`` (buffer starved) in its CMCD, as dash.js does. Every
``ttl_s`` it asks its steering source for the edges, best first, and moves to the
first (DASH-IF content steering: the highest-priority pathway), as dash.js does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from loadrig.cmcd import cmcd_query

# the edges' base URLs, best first; [] when steering did not answer
Steer = Callable[[], Awaitable[list[str]]]


@dataclass
class SteeredPlayer:
    sid: str
    path: str  # the media object's path on every edge
    steer: Steer
    edge: str  # the base URL it starts on (press play's first)
    ttl_s: float = 2.0
    target_s: float = 0.5
    chunk_s: float = 0.2
    bitrate_bps: int = 3_200_000
    served: dict[str, int] = field(default_factory=dict)  # requests answered per edge
    last_on: dict[str, float] = field(default_factory=dict)  # last request sent, per edge
    stalls: int = 0

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        steering = asyncio.create_task(self._follow(stop))
        try:
            await self._play(http, stop)
        finally:
            steering.cancel()

    async def _follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.ttl_s)
            edges = await self.steer()
            if edges:  # (none: a player plays on where it is when steering is away)
                self.edge = edges[0]

    async def _play(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        buffer_s, starved, startup = 0.0, False, True
        throughput = float(self.bitrate_bps)
        while not stop.is_set():
            edge = self.edge
            query = cmcd_query(
                sid=self.sid,
                kind="video",
                bitrate_bps=self.bitrate_bps,
                buffer_s=buffer_s,
                throughput_bps=throughput,
                startup=startup,
                starved=starved,
            )
            began = time.monotonic()
            try:
                async with http.get(f"{edge}{self.path}?{query}") as answer:
                    size = len(await answer.read())
                    ok = answer.status == 200
            except (OSError, aiohttp.ClientError):
                ok, size = False, 0
            took = time.monotonic() - began
            self.served[edge] = self.served.get(edge, 0) + 1
            self.last_on[edge] = began
            throughput = size * 8 / took if took > 0 and size else throughput
            buffer_s -= took
            starved = buffer_s < 0 and not startup  # (a start has no buffer to lose)
            if starved:
                self.stalls += 1
                buffer_s = 0.0
            if ok:
                buffer_s += self.chunk_s
                startup = False
            else:
                await asyncio.sleep(self.chunk_s)  # as a player's retry delay
            if buffer_s > self.target_s:
                await asyncio.sleep(buffer_s - self.target_s)
                buffer_s = self.target_s
