"""Which edges answer now, as the gateway sees them: a dead edge leaves a session's
steering answer within a probe, not at the registry's expiry (three missed heartbeats).

The registry learns of an edge's death only from its silence, seconds later; until then
every steering answer and session MPD would still name it first. Before answering, the
gateway asks each edge it is about to name for ``/healthz``, at most once per
``FRESH_S`` per edge (one probe in flight, shared by every session), bounded by
``PROBE_TIMEOUT_S``: an edge that refuses the connection, times out or answers other than
200 (a draining edge answers 503) is left out until a later probe finds it again. A
refused connection is known at once, so a killed edge is gone from the next answer.
When no edge answers, all are kept: the registry's ranking is then the better guess, and
a player handed no edge would stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import aiohttp

from livemesh.playback.v1 import playback_pb2 as pb

FRESH_S = 0.5  # a probe's verdict serves every session for this long
PROBE_TIMEOUT_S = 0.5  # an edge slower than this to say it is healthy is not steered to
MAX_EDGES = 4096  # verdicts kept; past it, the oldest are forgotten (and probed again)
HEALTH_PATH = "/healthz"


def edge_base(url: str) -> str:
    """``scheme://host:port`` of a manifest URL: the edge it names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Reachability:
    """Probe verdicts per edge, refreshed on demand and shared."""

    def __init__(
        self,
        fresh_s: float = FRESH_S,
        timeout_s: float = PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_s = fresh_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._client: aiohttp.ClientSession | None = None
        self._verdicts: dict[str, tuple[float, bool]] = {}
        self._probes: dict[str, asyncio.Task[bool]] = {}

    async def alive(self, base: str) -> bool:
        """Whether the edge at ``base`` answered its health check lately."""
        verdict = self._verdicts.get(base)
        if verdict is not None and self.clock() - verdict[0] < self.fresh_s:
            return verdict[1]
        probe = self._probes.get(base)
        if probe is None:
            probe = self._probes[base] = asyncio.create_task(self._probe(base))
            probe.add_done_callback(lambda _: self._probes.pop(base, None))
        return await asyncio.shield(probe)  # (a caller gone does not cancel the others' probe)

    async def _probe(self, base: str) -> bool:
        if self._client is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._client = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._client.get(base + HEALTH_PATH, allow_redirects=False) as response:
                healthy = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        if len(self._verdicts) >= MAX_EDGES:
            oldest = sorted(self._verdicts, key=lambda edge: self._verdicts[edge][0])
            for edge in oldest[: MAX_EDGES // 2]:
                del self._verdicts[edge]
        self._verdicts[base] = (self.clock(), healthy)
        return healthy

    async def serving(self, urls: Sequence[pb.ManifestUrl]) -> list[pb.ManifestUrl]:
        """``urls`` without those whose edge does not answer (all of them if none does),
        in their order."""
        bases = list(dict.fromkeys(edge_base(url.url) for url in urls))
        verdicts = dict(zip(bases, await asyncio.gather(*map(self.alive, bases)), strict=True))
        kept = [url for url in urls if verdicts[edge_base(url.url)]]
        return kept or list(urls)

    async def close(self) -> None:
        probes = list(self._probes.values())
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
