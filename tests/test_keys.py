"""The key schema: every key of a channel, and of an account's profiles, shares one Redis
Cluster slot; stream keys rotate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from kernel.keys import ChannelKeys, ProfileKeys
from kernel.redis_server import redis_client
from kernel.stream_keys import (
    channel_for_stream_key,
    issue_stream_key,
    new_stream_key,
    revoke_stream_key,
)
from tests.redis_cluster import LocalCluster, local_cluster


def test_every_key_of_a_channel_carries_its_hash_tag() -> None:
    keys = ChannelKeys("demo")
    names = [
        keys.config, keys.config_log, keys.stream_key, keys.epoch, keys.epochs,
        keys.events, keys.position("e1"), keys.init("e1", "v360"), keys.segment("e1", "v360", 7),
    ]  # fmt: skip
    assert all(name.startswith("lm:{demo}:") for name in names)
    assert len(set(names)) == len(names)
    assert keys.segment("e1", "v360", 7) == "lm:{demo}:seg:e1:v360:7"


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def test_every_key_of_a_channel_is_in_one_slot() -> None:
    for channel in ("demo", "news", "a-much-longer-channel-id"):
        keys = ChannelKeys(channel)
        names = [
            keys.config, keys.config_log, keys.stream_key, keys.epoch,
            keys.epochs, keys.events, keys.position("e1"), keys.position("e2"),
            keys.init("e1", "v360"), keys.segment("e1", "v360", 7),
            keys.segment("e2", "a128", 123456),
        ]  # fmt: skip
        assert len(slots(names)) == 1, channel
    assert len(slots([ChannelKeys(c).epoch for c in ("a", "b", "c", "d", "e")])) > 1


def test_every_key_of_an_account_is_in_one_slot_and_no_two_kinds_meet() -> None:
    for account in ("a1b2c3", "0f9e8d7c6b5a4321"):
        keys = ProfileKeys(account)
        names = [
            keys.profiles, keys.views("main"), keys.positions("main"), keys.views("kids"),
            keys.positions("kids"), keys.request("r1"), keys.request("0123-abcd"),
        ]  # fmt: skip
        assert len(slots(names)) == 1, account
        assert all(name.startswith(f"lm:pf:{{{account}}}:") for name in names)
    # a profile called "req" and a request id "views" (both valid ids) stay apart
    keys = ProfileKeys("acct")
    assert len({keys.views("req"), keys.request("views"), keys.positions("req")}) == 3
    assert len(slots([ProfileKeys(a).profiles for a in ("a", "b", "c", "d", "e")])) > 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from local_cluster()


async def test_stream_keys_rotate_on_a_cluster(cluster: LocalCluster) -> None:
    """The index and a channel's record are in two slots: no transaction spans them."""
    client = redis_client(cluster.url)
    try:
        await client.flushdb(target_nodes="primaries")  # type: ignore[call-arg]
        await test_a_rotated_or_revoked_stream_key_stops_working(client)
    finally:
        await client.aclose()


async def test_a_rotated_or_revoked_stream_key_stops_working(redis: aioredis.Redis) -> None:
    first, second = new_stream_key("news"), new_stream_key("news")
    assert first != second and len(first) > 40  # 256 random bits
    await issue_stream_key(redis, "news", first)
    assert await channel_for_stream_key(redis, first) == "news"
    await issue_stream_key(redis, "news", second)
    assert await channel_for_stream_key(redis, first) is None
    assert await channel_for_stream_key(redis, second) == "news"
    stored = await redis.get(ChannelKeys("news").stream_key)
    assert stored is not None and second.encode() not in stored  # a digest, not the key
    await revoke_stream_key(redis, "news")
    assert await channel_for_stream_key(redis, second) is None
    assert await channel_for_stream_key(redis, "x" * 300) is None
