"""The gateway's own probe of the edges it steers to (real HTTP servers on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kernel.ports import free_port
from livemesh.playback.v1 import playback_pb2 as pb
from services.gateway.reachability import Reachability


class Edge:
    """An edge's ``/healthz`` answering ``status``, counting the probes it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.probes = 0
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())

    async def healthz(self, request: web.Request) -> web.Response:
        self.probes += 1
        return web.Response(status=self.status)

    def url(self) -> pb.ManifestUrl:
        base = f"http://127.0.0.1:{self.server.port}"
        return pb.ManifestUrl(url=f"{base}/t/TOKEN/live/demo/manifest.mpd")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def edges() -> AsyncIterator[tuple[Edge, Edge]]:
    up, draining = Edge(), Edge(status=503)
    await up.server.start_server()
    await draining.server.start_server()
    yield up, draining
    await up.server.close()
    await draining.server.close()


def dead_url() -> pb.ManifestUrl:
    """An edge nobody listens on: its connection is refused."""
    return pb.ManifestUrl(url=f"http://127.0.0.1:{free_port()}/t/TOKEN/live/demo/manifest.mpd")


async def test_an_edge_that_refuses_or_is_not_healthy_is_left_out(
    edges: tuple[Edge, Edge],
) -> None:
    up, draining = edges
    reachability = Reachability()
    try:
        urls = [dead_url(), draining.url(), up.url()]
        assert await reachability.serving(urls) == [up.url()]
    finally:
        await reachability.close()


async def test_when_no_edge_answers_the_ranking_stands() -> None:
    reachability = Reachability()
    try:
        urls = [dead_url(), dead_url()]
        assert await reachability.serving(urls) == urls
    finally:
        await reachability.close()


async def test_one_probe_per_edge_serves_every_session_until_it_is_stale(
    edges: tuple[Edge, Edge],
) -> None:
    up, _ = edges
    clock = Clock()
    reachability = Reachability(fresh_s=0.5, clock=clock)
    try:
        answers = await asyncio.gather(*(reachability.serving([up.url()]) for _ in range(50)))
        assert answers == [[up.url()]] * 50
        assert up.probes == 1  # fifty sessions at once: one probe in flight, shared
        clock.now = 0.4
        await reachability.serving([up.url()])
        assert up.probes == 1  # still fresh
        up.status = 503  # the edge starts draining
        clock.now = 0.6
        urls = [up.url(), dead_url()]
        assert await reachability.serving(urls) == urls  # (neither answers: both kept)
        assert up.probes == 2
        assert not await reachability.alive(f"http://127.0.0.1:{up.server.port}")
    finally:
        await reachability.close()
