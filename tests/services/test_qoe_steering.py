"""Steering reacts to QoE, end to end: players sending CMCD through two real edges, a
real ``livemesh qoe`` process scoring them, registry and playback serving press play and
steering. Latency injected into one edge's data path makes its players stall; the
processor scores it down; new sessions avoid it, steering drops it and its players
leave; once the latency is gone it is tried again and gets its viewers back.
(Timings are measured by ``bench/qoe.py``; here only what happens, within bounds.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis

from edge.node import EdgeNode
from edge.qoe import QoeConfig
from kernel.keys import qoe_health
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.registry.v1 import registry_pb2 as rpb
from loadrig.delay_proxy import DelayProxy
from loadrig.steered_player import SteeredPlayer
from tests.services.conftest import SignUp
from tests.services.test_playback_service import Plane, plane  # noqa: F401  (a fixture)
from tests.test_edge_node import IMMUTABLE, SEG, Parent, start_node
from tests.test_qoe import qoe_process

T = TypeVar("T")
PLAYERS = 16
BUFFER_S = 1.0  # the players' buffer: a loaded test machine's hiccups stall none
LATENCY_S = 1.5  # each request to the bad edge: more than its players' buffer allows


async def until(what: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll ``what`` (a call that fails, as a loaded machine's shed RPC does, is a no)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if await what():
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.25)


async def unshed(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, made again while a loaded machine's server sheds it, as clients do."""
    for _ in range(50):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        await asyncio.sleep(0.2)
    raise AssertionError("shed 50 times")


def base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
async def parent() -> AsyncIterator[Parent]:
    p = Parent()
    p.static[SEG] = (200, bytes(16 << 10), IMMUTABLE)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def processor(redis_url: str) -> AsyncIterator[None]:
    async with qoe_process(redis_url, "--block-ms", "50"):  # the default window
        yield


async def test_a_degraded_edge_loses_new_and_playing_viewers_and_wins_them_back(
    plane: Plane,  # noqa: F811
    sign_up: SignUp,
    parent: Parent,
    redis: aioredis.Redis,
    redis_url: str,
    processor: None,
) -> None:
    qoe = QoeConfig(redis_url=redis_url, batch=50, flush_s=0.05)
    nodes: list[EdgeNode] = []
    proxies: dict[str, DelayProxy] = {}
    for name in ("e-a", "e-b"):  # e-a ranks first while both are well (by name)
        node, url = await start_node(parents=(parent.url,), name=name, region="eu", qoe=qoe)
        nodes.append(node)
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host is not None and port is not None
        proxy = proxies[name] = DelayProxy(host, port)
        await proxy.start()
        register = rpb.RegisterInstanceRequest(
            instance=rpb.Instance(
                instance_id=name,
                service="edge",
                address=proxy.url,
                region="eu-west",
                load=0.1,
                health=rpb.HEALTH_SERVING,
                heartbeat_interval_seconds=600,
            )
        )
        await unshed(lambda r=register: plane.registry.RegisterInstance(r))
    where = {proxies[n].url: n for n in proxies}
    ada = await sign_up("ada@example.org")

    async def press_play() -> pb.PlaybackSession:
        request = pb.StartPlaybackRequest(content="channels/demo", client_region="eu-west")
        return (
            await unshed(lambda: plane.playback.StartPlayback(request, metadata=ada.auth))
        ).session

    async def first_choice() -> str:
        return where[base((await press_play()).manifest_urls[0].url)]

    def steering(session: str) -> Callable[[], Awaitable[list[str]]]:
        async def steer() -> list[str]:
            try:
                answer = await plane.playback.GetSteering(pb.GetSteeringRequest(name=session))
            except grpc.aio.AioRpcError:
                return []  # no answer: the player stays where it is
            return [base(u.url) for u in answer.manifest_urls]

        return steer

    def player_of(session: pb.PlaybackSession) -> SteeredPlayer:
        start = base(session.manifest_urls[0].url)
        player = SteeredPlayer(session.name, SEG, steering(session.name), start, ttl_s=1.0)
        player.target_s = BUFFER_S
        return player

    players = [player_of(await press_play()) for _ in range(PLAYERS)]
    assert {where[p.edge] for p in players} == {"e-a"}
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        playing = [asyncio.create_task(p.run(http, stop)) for p in players]
        try:

            async def scored() -> bool:
                return bool(await redis.hget(qoe_health("e-a"), "score"))

            await until(scored, 30)  # the processor hears e-a's players
            assert await first_choice() == "e-a"

            proxies["e-a"].delay_s = LATENCY_S

            async def avoided() -> bool:
                return await first_choice() == "e-b"

            await until(avoided, 30)

            async def dropped() -> bool:  # steering drops e-a
                steered = await steering((await press_play()).name)()
                return [where[b] for b in steered] == ["e-b"]

            await until(dropped, 10)

            async def all_left() -> bool:
                return all(where[p.edge] == "e-b" for p in players)

            await until(all_left, 10)
            assert sum(p.stalls for p in players) > 0  # what the processor heard

            proxies["e-a"].delay_s = 0.0  # well again
            newcomers: list[SteeredPlayer] = []

            async def back() -> bool:
                """New viewers keep arriving: once press play tries e-a again (probation),
                theirs is the traffic that proves it well, and steering brings back the
                viewers that left."""
                newcomer = player_of(await press_play())
                if where[newcomer.edge] == "e-a" and len(newcomers) < PLAYERS:
                    newcomers.append(newcomer)  # (the others would play on e-b: not run)
                    playing.append(asyncio.create_task(newcomer.run(http, stop)))
                return all(where[p.edge] == "e-a" for p in players)

            await until(back, 60)
            assert any(n.served.get(proxies["e-a"].url) for n in newcomers)
        finally:
            stop.set()
            await asyncio.gather(*playing, return_exceptions=True)
            for proxy in proxies.values():
                await proxy.close()
            for node in nodes:
                await node.close()
