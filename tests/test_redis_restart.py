"""State that survives a Redis restart, and an outage that answers 503, not 500.

The embedded server is killed outright (SIGKILL, as the kernel's OOM killer or an
operator would) and started again on the same socket: what was written before is
replayed from its append-only file, clients made before the kill work again without
being rebuilt, and while it is down a service answers UNAVAILABLE (the gateway 503 with
``Retry-After``, the origin too), logging one line for the outage, not a trace per call.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import redis.exceptions
from aiohttp.test_utils import TestServer

from kernel.config import ConfigError
from kernel.outage import RETRY_AFTER_S, OutageLog
from kernel.redis_server import (
    START_WAIT_S,
    EmbeddedRedis,
    check_redis,
    redis_client,
    shared_client,
)
from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import serve
from live.origin import build_app as build_origin
from livemesh.identity.v1 import identity_pb2 as pb
from livemesh.identity.v1 import identity_pb2_grpc as pb_grpc
from player.harness import live_stack, missing_setup, serve_player
from player.outage import BROWSER_PLAYERS, RIG_PLAYER, redis_outage, rig_watching, watching
from services.gateway.app import Gateway, build_app
from services.identity.service import IdentityService
from tests.db_helpers import TcpProxy, proxied_postgres

CALLS_DURING_OUTAGE = 5
# the outage of issue 20's target; the players are watched this long after Redis is back
OUTAGE_S = 4.0
WATCH_S = 20.0
# Behavioural bounds, from Redis's return. Press play is held to its target (5 s). A
# viewer already playing is held to playing again by itself, without a reload, and back
# at its latency within the watch: the 2 s target is timed by bench/redis_outage.py
PRESS_PLAY_BOUND_S = 5.0
# the loggers of the code answering requests: the service scaffold and the gateway (the
# gateway's circuit breaker, seeing the failures, may say so too: a separate concern)
ANSWERING = ("kernel.rpc.server", "services.gateway.app")


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    """A private server of this test's own, since the test kills it."""
    with EmbeddedRedis() as embedded:
        yield embedded


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def serve_http(app: aiohttp.web.Application) -> TestServer:
    running = TestServer(app, host="127.0.0.1")
    await running.start_server()
    return running


@pytest.fixture
async def accounts_database() -> AsyncIterator[tuple[str, TcpProxy]]:
    """Identity's database, reached through a proxy the outage test cuts with Redis (the
    host of the state stores is gone): accounts are no longer kept in Redis."""
    async with proxied_postgres() as made:
        yield made


def sign_up(n: int) -> pb.SignUpRequest:
    return pb.SignUpRequest(
        email=f"viewer{n}@example.org", password="correct horse battery", display_name="V"
    )


async def test_a_killed_server_restarts_with_its_data_and_old_clients_work_again(
    server: EmbeddedRedis,
) -> None:
    plain, shared = redis_client(server.url), shared_client(server.url)
    try:
        await plain.set("lm:{demo}:config", b"the channel record")
        await shared.rpush("lm:{demo}:seg", b"chunk 0", b"chunk 1")
        server.kill()
        for client in (plain, shared):
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.get("lm:{demo}:config")
        server.restart()
        # the same client objects, not rebuilt: their pools reconnect on the next command
        assert await plain.get("lm:{demo}:config") == b"the channel record"
        assert await shared.lrange("lm:{demo}:seg", 0, -1) == [b"chunk 0", b"chunk 1"]
        assert await shared.get("lm:{demo}:config") == b"the channel record"
    finally:
        await plain.aclose()
        await shared.aclose()


async def test_an_outage_answers_unavailable_and_503_with_one_log_line_then_recovers(
    server: EmbeddedRedis,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    accounts_database: tuple[str, TcpProxy],
) -> None:
    # the gateway and this test call through channels of their own (each has a breaker)
    factory, gateway_factory = RpcChannelFactory(), RpcChannelFactory()
    database_url, database_proxy = accounts_database
    identity = IdentityService(database_url)
    running = await serve(identity)
    verifier = TokenVerifier(identity_key_loader(gateway_factory, running.target))
    gateway = await serve_http(
        build_app(Gateway(gateway_factory, {"identity": running.target}, verifier))
    )
    origin_redis = shared_client(server.url)
    origin = await serve_http(build_origin(origin_redis))
    stub = factory.stub(pb_grpc.IdentityServiceStub, running.target)
    try:
        await stub.SignUp(sign_up(0))
        server.kill()
        await database_proxy.cut()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for n in range(1, CALLS_DURING_OUTAGE + 1):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.SignUp(sign_up(n))
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert caught.value.details() == "state store unavailable"
            late = {
                "email": "late@example.org",
                "password": "correct horse battery",
                "displayName": "L",
            }
            async with http.post(
                f"http://127.0.0.1:{gateway.port}/v1/accounts:signUp", json=late
            ) as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
                assert (await resp.json())["error"]["status"] == "UNAVAILABLE"
            async with http.get(f"http://127.0.0.1:{origin.port}/live/demo/manifest.mpd") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
            async with http.post(  # a second request through the gateway: no new line
                f"http://127.0.0.1:{gateway.port}/v1/accounts:signUp", json=late
            ) as resp:
                assert resp.status == 503
            # one line per outage from the service, one from the gateway; no traceback
            outage_window = [r for r in caplog.records if r.name in ANSWERING]
            assert [(r.name, r.getMessage().split(",")[0]) for r in outage_window] == [
                ("kernel.rpc.server", "state store (Redis) unavailable"),
                ("services.gateway.app", "the service of /v1/accounts:signUp unavailable"),
            ]
            assert not any(r.exc_info for r in caplog.records)

            server.restart()
            await database_proxy.start()
            caplog.clear()
            # recovers by itself: the same service, client and server objects
            again = await stub.SignUp(sign_up(CALLS_DURING_OUTAGE + 1))
            assert again.account.email == f"viewer{CALLS_DURING_OUTAGE + 1}@example.org"
            async with http.post(
                f"http://127.0.0.1:{gateway.port}/v1/accounts:signUp", json=late
            ) as resp:
                assert resp.status == 200, await resp.text()
            ended = [(r.name, r.getMessage()) for r in caplog.records if r.name in ANSWERING]
            assert [name for name, _ in ended] == ["kernel.rpc.server", "services.gateway.app"]
            assert all("outage ended" in message for _, message in ended)
            assert f"({CALLS_DURING_OUTAGE + 2} requests refused)" in ended[0][1]
            assert "(2 requests refused)" in ended[1][1]
            # the account made before the kill is still there (the database)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SignUp(sign_up(0))
            assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    finally:
        await origin.close()
        await origin_redis.aclose()
        await gateway.close()
        await running.stop(0)
        await identity.close()
        await factory.close()
        await gateway_factory.close()


def test_the_outage_log_says_began_once_reminds_rarely_and_says_ended() -> None:
    now = [0.0]
    logger = logging.getLogger("test.outage")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(handler := Collect())
    try:
        outage = OutageLog("store", logger, remind_s=60, clock=lambda: now[0])
        outage.succeeded()  # nothing to say while all is well
        for t in (0.0, 1.0, 59.0, 61.0, 62.0):
            now[0] = t
            outage.failed("ConnectionError: gone")
        now[0] = 70.0
        outage.succeeded()
        outage.succeeded()
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "store unavailable, outage began: ConnectionError: gone",
        "store still unavailable after 61 s (4 requests refused)",
        "store back, outage ended after 70.0 s (5 requests refused)",
    ]


def test_a_redis_url_that_cannot_be_reached_is_a_startup_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"^REDIS_URL=unix://.*/nowhere.sock: cannot use"):
        check_redis(f"unix://{tmp_path}/nowhere.sock", wait_s=0.2)
    with pytest.raises(ConfigError, match=r"^REDIS_URL=redis://:<set>@127.0.0.1:1: ") as caught:
        check_redis("redis://:secret@127.0.0.1:1", wait_s=0.2)
    assert "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^REDIS_URL=localhost:6379: not a Redis URL"):
        check_redis("localhost:6379")


def test_a_service_given_an_unreachable_redis_exits_2_naming_the_setting() -> None:
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from services.channels.service import main; sys.exit(main())",
            "--redis-url",
            "redis://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "livemesh channels: REDIS_URL=redis://127.0.0.1:1: cannot use" in run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - started < START_WAIT_S + 30  # waited its bound, not forever


def test_the_data_directory_is_private_kept_across_a_restart_and_removed_at_stop() -> None:
    server = EmbeddedRedis()
    data = server.socket_path.parent
    try:
        server.start()
        assert data.stat().st_mode & 0o777 == 0o700
        server.kill()
        server.restart()
        assert any(data.glob("appendonly*")), sorted(p.name for p in data.iterdir())
    finally:
        server.stop()
    assert not data.exists()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("player", BROWSER_PLAYERS)
def test_a_browser_viewer_plays_on_at_its_latency_after_redis_is_down_4_s_with_or_without_data(
    player: str,
) -> None:
    """Redis is killed mid-stream, down 4 s, then restarted from its append-only file and,
    a second time, empty: the player (in Chromium, through edge and shield) plays again by
    itself and gets back within 0.5 s of the latency it held before (past the MPD's
    Latency@max, or one target duration, it seeks back to its target), and a new viewer's
    manifest answers within 5 s; the channel went on on the same epoch, so there was
    nothing to re-sync."""
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with (
        EmbeddedRedis() as redis,
        live_stack("outage", redis_url=redis.url) as stack,
        serve_player() as player_url,
        watching(stack, player_url, (player,)) as watch,
    ):
        epoch = _period_of(stack.origin_mpd)
        for empty in (False, True):
            outage = redis_outage(redis, stack, watch, OUTAGE_S, empty, WATCH_S)
            report = f"{outage.figures()}\n{stack.log_tail()}"
            viewer = next(r for r in outage.resumes if r.player == player)
            assert viewer.stall_s > 0, report  # the outage was felt: the buffer is shorter
            assert viewer.resumed_after_s is not None, report  # within WATCH_S
            assert viewer.at_target_after_s is not None, report
            assert not viewer.gave_up, report
            assert outage.press_play_after_s is not None, report
            assert outage.press_play_after_s <= PRESS_PLAY_BOUND_S, report
            assert _period_of(stack.origin_mpd) == epoch, report  # the same timeline
        assert not stack.dead(), stack.log_tail()


@pytest.mark.timeout(180)
def test_the_rig_player_plays_on_and_back_at_its_latency_after_redis_is_down_4_s() -> None:
    """The load rig's virtual player through edge and shield while Redis is down 4 s: it
    keeps retrying (it gave up after three quick tries), plays again by itself once Redis
    is back, and gets back within 0.5 s of the latency it held before,
    by jumping to the live point (it is more than the MPD's Latency@max behind)."""
    with (
        EmbeddedRedis() as redis,
        live_stack("outage", redis_url=redis.url) as stack,
        rig_watching(stack) as watch,
    ):
        outage = redis_outage(redis, stack, watch, OUTAGE_S, False, WATCH_S)
        report = f"{outage.figures()}\n{stack.log_tail()}"
        (rig,) = outage.resumes
        assert rig.player == RIG_PLAYER
        assert not rig.gave_up, report
        assert rig.stall_s > 0, report  # the outage was felt
        assert rig.resumed_after_s is not None, report  # within WATCH_S
        assert rig.at_target_after_s is not None, report
        assert not stack.dead(), stack.log_tail()


def _period_of(mpd_url: str) -> str:
    """The live Period's id (the channel's epoch) in the MPD at ``mpd_url``."""
    with urllib.request.urlopen(mpd_url, timeout=5) as resp:
        found = re.search(r'<Period[^>]* id="([^"]+)"', resp.read().decode())
    assert found, mpd_url
    return found.group(1)
