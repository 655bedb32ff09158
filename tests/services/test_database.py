"""Records in the relational database, on PostgreSQL and on SQLite: migrations, constraints,
a Redis that restarts empty losing nothing, and a database outage answered as one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp.test_utils import TestServer
from sqlalchemy.exc import IntegrityError

from kernel import tokens
from kernel.channel_config_store import get_channel_config
from kernel.db import connect_database, migrate
from kernel.keys import STREAM_KEYS, ChannelKeys
from kernel.outage import RETRY_AFTER_S
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.stream_keys import channel_for_stream_key, key_digest
from livemesh.channels.v1 import channels_pb2 as cpb
from livemesh.channels.v1 import channels_pb2_grpc as cpb_grpc
from livemesh.identity.v1 import identity_pb2 as ipb
from livemesh.identity.v1 import identity_pb2_grpc as ipb_grpc
from livemesh.playback.v1 import playback_pb2 as ppb
from livemesh.playback.v1 import playback_pb2_grpc as ppb_grpc
from services.catalog.service import CatalogService
from services.channels import store as channel_store
from services.channels.service import ChannelService
from services.gateway.app import Gateway, build_app
from services.identity import store as identity_store
from services.identity.service import IdentityService
from services.playback.service import PlaybackService, PlaybackServicer
from services.registry.service import RegistryService
from tests.db_helpers import proxied_postgres
from tests.services.conftest import Metadata, Presenting, Start, expect_error

PASSWORD = "correct horse battery"
MIRROR_WAIT_S = 5.0  # the mirror checks every second


def sign_up(email: str) -> ipb.SignUpRequest:
    return ipb.SignUpRequest(email=email, password=PASSWORD)


async def test_migrations_apply_on_an_empty_database_once_however_often_they_run(
    any_database: str,
) -> None:
    engine = connect_database(any_database)
    try:
        components = (
            ("identity", identity_store.MIGRATIONS),
            ("channels", channel_store.MIGRATIONS),
        )
        for component, migrations in components:
            # two instances starting at once: one applies, the other finds it applied
            first, second = await asyncio.gather(
                migrate(engine, component, migrations), migrate(engine, component, migrations)
            )
            assert sorted(first + second) == [m.version for m in migrations]
            assert await migrate(engine, component, migrations) == []
        async with engine.connect() as conn:
            versions = (
                await conn.execute(sa.text("SELECT component, version FROM schema_migrations"))
            ).all()
            assert sorted(versions) == [("channels", 1), ("identity", 1)]
            for table in ("identity_accounts", "identity_signing_keys", "channels"):
                assert await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) == 0
    finally:
        await engine.dispose()


async def test_constraints_hold(
    any_database: str, start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    identity = await start(IdentityService(any_database))
    stub = factory.stub(ipb_grpc.IdentityServiceStub, identity.target)
    await stub.SignUp(sign_up("ada@example.org"))
    await expect_error(
        stub.SignUp(sign_up("ADA@example.org")), grpc.StatusCode.ALREADY_EXISTS, "email"
    )
    engine = connect_database(any_database)
    try:
        with pytest.raises(IntegrityError):  # no entitlement of an account that is not
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(identity_store.entitlements).values(
                        account_id="nobody", entitlement="live"
                    )
                )
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM identity_accounts")) == 1
    finally:
        await engine.dispose()


async def _playback(
    start: Start, factory: RpcChannelFactory, redis_url: str, identity: str, channels: str
) -> ppb_grpc.PlaybackServiceStub:
    """Press play on ``channels`` (no cache in playback: every call asks the channels
    service), with a catalog and registry of its own."""
    servicer = PlaybackServicer(
        redis_url,
        TokenVerifier(identity_key_loader(factory, identity)),
        factory,
        catalog=(await start(CatalogService())).target,
        channels=channels,
        registry=(await start(RegistryService())).target,
        signer=tokens.TokenSigner.from_spec("test:" + "ab" * 32),
        cache_ttl_s=0,
    )
    playback = await start(PlaybackService(servicer))
    return factory.stub(ppb_grpc.PlaybackServiceStub, playback.target)


def _lose_redis_disk(server: EmbeddedRedis) -> None:
    """Kill the server and delete its append-only files: it restarts empty."""
    server.kill()
    data_dir = server.socket_path.parent
    for path in data_dir.iterdir():
        if path.name.startswith("appendonly"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    server.restart()


async def _wait_for_key(server: EmbeddedRedis, stream_key: str) -> str | None:
    client = redis_client(server.url)
    try:
        deadline = time.monotonic() + MIRROR_WAIT_S
        while (found := await channel_for_stream_key(client, stream_key)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)
        return found
    finally:
        await client.aclose()


async def test_redis_restarting_empty_loses_no_account_channel_or_stream_key(
    any_database: str, start: Start, factory: RpcChannelFactory, operator_auth: Metadata
) -> None:
    with EmbeddedRedis() as server:
        identity = await start(IdentityService(any_database))
        channels = await start(ChannelService(server.url, any_database, seed_demo=False))
        press = await _playback(start, factory, server.url, identity.target, channels.target)
        ids = factory.stub(ipb_grpc.IdentityServiceStub, identity.target)
        chans = Presenting(
            factory.stub(cpb_grpc.ChannelServiceStub, channels.target), operator_auth
        )
        await ids.SignUp(sign_up("ada@example.org"))
        created = await chans.CreateChannel(
            cpb.CreateChannelRequest(channel_id="gala", channel=cpb.Channel(display_name="Gala"))
        )

        _lose_redis_disk(server)
        client = redis_client(server.url)
        assert await client.dbsize() == 0  # nothing came back from disk
        await client.aclose()

        signed_in = await ids.SignIn(ipb.SignInRequest(email="ada@example.org", password=PASSWORD))
        session = (
            await press.StartPlayback(
                ppb.StartPlaybackRequest(content="channels/gala"),
                metadata=(("authorization", f"Bearer {signed_in.access_token}"),),
            )
        ).session
        assert session.manifest_urls
        # the broadcaster's key works again: ingest reads it from Redis, put back from the database
        assert await _wait_for_key(server, created.stream_key) == "gala"
        checked = await chans.CheckStreamKey(
            cpb.CheckStreamKeyRequest(stream_key=created.stream_key)
        )
        assert checked.channel == "channels/gala"
        listed = await chans.ListChannels(cpb.ListChannelsRequest())
        assert [c.name for c in listed.channels] == ["channels/gala"]


async def test_database_down_sign_up_answers_503_and_authorised_viewers_still_press_play(
    start: Start,
    factory: RpcChannelFactory,
    redis_url: str,
    http: aiohttp.ClientSession,
    operator_auth: Metadata,
) -> None:
    async with proxied_postgres() as (url, proxy):
        identity = await start(IdentityService(url))
        channels = await start(ChannelService(redis_url, url, seed_demo=False, cache_ttl_s=0))
        press = await _playback(start, factory, redis_url, identity.target, channels.target)
        gateway_factory = RpcChannelFactory()
        gateway = TestServer(
            build_app(
                Gateway(
                    gateway_factory,
                    {"identity": identity.target},
                    TokenVerifier(identity_key_loader(gateway_factory, identity.target)),
                )
            ),
            host="127.0.0.1",
        )
        await gateway.start_server()
        ids = factory.stub(ipb_grpc.IdentityServiceStub, identity.target)
        chans = Presenting(
            factory.stub(cpb_grpc.ChannelServiceStub, channels.target), operator_auth
        )
        try:
            viewer = await ids.SignUp(sign_up("ada@example.org"))
            await chans.CreateChannel(
                cpb.CreateChannelRequest(channel_id="gala", channel=cpb.Channel(display_name="G"))
            )
            auth = (("authorization", f"Bearer {viewer.access_token}"),)
            await press.StartPlayback(
                ppb.StartPlaybackRequest(content="channels/gala"), metadata=auth
            )

            await proxy.cut()
            await expect_error(ids.SignUp(sign_up("bob@example.org")), grpc.StatusCode.UNAVAILABLE)
            body = {"email": "eve@example.org", "password": PASSWORD}
            async with http.post(
                f"http://127.0.0.1:{gateway.port}/v1/accounts:signUp", json=body
            ) as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == str(RETRY_AFTER_S)
            # the viewer signed in before the outage presses play: the channel is served
            # from the channels service's last read
            again = await press.StartPlayback(
                ppb.StartPlaybackRequest(content="channels/gala"), metadata=auth
            )
            assert again.session.manifest_urls

            await proxy.start()
            await ids.SignUp(sign_up("bob@example.org"))  # back by itself
        finally:
            await gateway.close()
            await gateway_factory.close()


def test_a_service_given_an_unreachable_database_exits_2_naming_the_setting() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from services.identity.service import main; sys.exit(main())",
            "--database-url",
            "postgresql+asyncpg://livemesh:hunter2@127.0.0.1:1/livemesh",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "livemesh identity: LIVEMESH_DATABASE_URL: cannot reach the database" in run.stderr
    assert "hunter2" not in run.stderr  # the URL's password is never shown
    assert "Traceback" not in run.stderr


async def test_the_mirror_repairs_copies_a_create_could_not_write(
    database_url: str, redis: aioredis.Redis, redis_url: str
) -> None:
    service = ChannelService(redis_url, database_url, seed_demo=False)
    await service.start()
    try:
        _, stream_key = await service.servicer.create("gala", cpb.Channel(display_name="Gala"))
        # Redis went away between the database commit and the copies: they are missing,
        # while the marker of an earlier full copy is still there
        await redis.delete(ChannelKeys("gala").config)
        await redis.hdel(STREAM_KEYS, key_digest(stream_key))
        assert not await service.mirror.ensure()  # the marker alone says nothing is lost
        assert await service.mirror.ensure(always=True)  # the periodic full copy
        assert await get_channel_config(redis, "gala") is not None
        assert await channel_for_stream_key(redis, stream_key) == "gala"
    finally:
        await service.close()
