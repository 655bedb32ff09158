"""bench/qoe.py, part 4: a degraded edge, and how fast steering reacts.

Two real ``livemesh edge`` processes with ``--qoe on``, each behind a latency proxy
(:mod:`loadrig.delay_proxy`), and a real ``livemesh qoe`` (its default window) score the
players' CMCD. Press play and steering are playback's own steps, in this process: the
edges' QoE demotions (:class:`QoeHealthReader`, read as playback reads them) applied to
the ranking (:class:`RankingCache`) of the edge set a registry would answer, the demoted
left out of steering answers. Players (:mod:`loadrig.steered_player`) follow steering
every ``STEERING_TTL_S``, the gateway's steering TTL.

Latency is injected into edge-a (which every session starts on), then removed once its
players have left (sent it no request since); from then on a new session arrives every
``ARRIVAL_S`` (press play; those sent to edge-a play). Measured: injection -> new
sessions avoid it; demotion -> the last request a player sent it (target: within one
steering TTL); removal -> its first player request again (a new session's, once it is
on probation), and -> every player that left is back on it (steering restores it once
it has scored well).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp

from kernel import clock
from kernel.keys import qoe_health
from kernel.redis_server import redis_client
from livemesh.registry.v1 import registry_pb2
from loadrig.delay_proxy import DelayProxy
from loadrig.steered_player import SteeredPlayer
from services.playback.qoe_demotion import steering_order
from services.playback.qoe_health import QoeHealthReader
from services.playback.steering import RankingCache

STEERING_TTL_S = 2.0  # services.gateway.steering's TTL
BUFFER_S = 1.0  # the players' buffer: a loaded bench machine's hiccups stall none
LATENCY_S = 1.5  # more than the buffer holds: every request to edge-a stalls a player
PLAYERS = 16
REGION = "eu-west"
ARRIVAL_S = 0.25


class Playback:
    """Press play's and steering's edge choice, as the playback service makes it."""

    def __init__(self, redis_url: str, proxies: dict[str, DelayProxy]) -> None:
        self.reader = QoeHealthReader(redis_client(redis_url))
        self.rankings = RankingCache()
        self.instances = [
            registry_pb2.Instance(
                name=f"instances/{name}",
                address=proxy.url,
                region=REGION,
                health=registry_pb2.HEALTH_SERVING,
                load=0.1,
            )
            for name, proxy in proxies.items()
        ]
        self.address = {f"instances/{n}": p.url for n, p in proxies.items()}

    async def ranked(self, steering: bool = False) -> list[str]:
        verdict = self.reader.verdict([i.name for i in self.instances])
        ranked = self.rankings.ranked(self.instances, REGION, "demo", verdict.demoted)
        order = [e.name for e in ranked]
        if steering:
            order = steering_order(order, verdict)
        return [self.address[n] for n in order]

    async def steer(self) -> list[str]:
        return await self.ranked(steering=True)

    async def close(self) -> None:
        await self.reader.redis.aclose()


async def wait_for(what: object, timeout_s: float, step_s: float = 0.05) -> float:
    """Seconds until ``what()`` (a coroutine function) is true."""
    assert callable(what)
    began = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while not await what():
            await asyncio.sleep(step_s)
    return time.monotonic() - began


async def degraded_edge(redis_url: str, edges: dict[str, str], segment: str) -> dict[str, object]:
    proxies: dict[str, DelayProxy] = {}
    for name, url in edges.items():
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        proxies[name] = DelayProxy(parts.hostname, parts.port)
        await proxies[name].start()
    bad = proxies["edge-a"]
    playback = Playback(redis_url, proxies)
    first = (await playback.ranked())[0]  # every session's press play
    players = [
        SteeredPlayer(f"s{i}", segment, playback.steer, first, STEERING_TTL_S, BUFFER_S)
        for i in range(PLAYERS)
    ]
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            tasks = [asyncio.create_task(p.run(http, stop)) for p in players]
            try:
                return await _timeline(playback, players, bad, http, stop)
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await playback.close()
        for proxy in proxies.values():
            await proxy.close()


async def _timeline(
    playback: Playback,
    players: list[SteeredPlayer],
    bad: DelayProxy,
    http: aiohttp.ClientSession,
    stop: asyncio.Event,
) -> dict[str, object]:
    assert all(p.edge == bad.url for p in players)
    began_s = clock.now_ms() // 1000 + 1
    health = playback.reader.redis

    async def scored_since_start() -> bool:  # a window with none of the players' startups
        return int(await health.hget(qoe_health("edge-a"), "window") or 0) >= began_s

    await wait_for(scored_since_start, 30)
    await asyncio.sleep(STEERING_TTL_S)  # and the players stay on it
    assert (await playback.ranked())[0] == bad.url, "edge-a lost its viewers while well"
    stalls_before = sum(p.stalls for p in players)
    bad.delay_s = LATENCY_S
    injected = time.monotonic()

    async def avoided() -> bool:
        return (await playback.ranked())[0] != bad.url

    new_avoid_s = await wait_for(avoided, 60)
    demoted_at = time.monotonic()

    async def left() -> bool:
        return all(p.edge != bad.url for p in players)

    await wait_for(left, 60)
    await asyncio.sleep(LATENCY_S + 0.1)  # (a request sent before the move is answered)
    last_request = max(p.last_on.get(bad.url, 0.0) for p in players)
    stalls = sum(p.stalls for p in players) - stalls_before
    bad.delay_s = 0.0
    newcomers: list[SteeredPlayer] = []
    arriving = asyncio.create_task(_arrivals(playback, bad, players[0].path, newcomers, http, stop))

    async def back() -> bool:
        return any(p.served.get(bad.url) for p in newcomers)

    async def returned() -> bool:
        return all(p.edge == bad.url for p in players)

    try:
        traffic_back_s = await wait_for(back, 90)
        returned_s = traffic_back_s + await wait_for(returned, 90)
    finally:
        arriving.cancel()
        await asyncio.gather(arriving, return_exceptions=True)
    return {
        "players": len(players),
        "latency_injected_s": LATENCY_S,
        "steering_ttl_s": STEERING_TTL_S,
        "new_sessions_avoid_s": round(new_avoid_s, 2),
        "existing_left_after_demotion_s": round(max(0.0, last_request - demoted_at), 2),
        "existing_left_after_injection_s": round(last_request - injected, 2),
        "stalls_while_degraded": stalls,
        "traffic_back_after_recovery_s": round(traffic_back_s, 2),
        "players_that_left_back_after_recovery_s": round(returned_s, 2),
    }


async def _arrivals(
    playback: Playback,
    bad: DelayProxy,
    segment: str,
    newcomers: list[SteeredPlayer],
    http: aiohttp.ClientSession,
    stop: asyncio.Event,
) -> None:
    """A new session every ``ARRIVAL_S``; those press play sends to ``bad`` play (up to
    ``PLAYERS``), the others would only add load elsewhere."""
    tasks: list[asyncio.Task[None]] = []
    try:
        while True:
            first = (await playback.ranked())[0]
            if first == bad.url and len(newcomers) < PLAYERS:
                name = f"n{len(newcomers)}"
                newcomer = SteeredPlayer(
                    name, segment, playback.steer, first, STEERING_TTL_S, BUFFER_S
                )
                newcomers.append(newcomer)
                tasks.append(asyncio.create_task(newcomer.run(http, stop)))
            await asyncio.sleep(ARRIVAL_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
