"""The data plane's copies in Redis of the channels service's database records.

The packager and ingest read Redis alone (no gRPC hop, so they run through a control
plane outage): a channel's configuration record and its stream key's digest. When Redis
restarts empty those copies are gone, while the database still holds the records; a
marker key set after a full copy tells this loop whether Redis still has them, so one
GET a second finds out and the loop writes everything back. A full copy also runs every
``RECONCILE_S`` whatever the marker says: a create whose Redis writes failed after its
database commit (Redis went away in between) is repaired within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from kernel.channel_config_store import restore_channel_config
from kernel.db import database_down
from kernel.keys import CHANNELS_MIRRORED
from kernel.rpc.server import STORE_DOWN
from kernel.stream_keys import publish_stream_key_digest
from services.channels.records import channel_config
from services.channels.store import ChannelStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
RECONCILE_S = 60.0


class RedisMirror:
    def __init__(
        self, redis: aioredis.Redis, store: ChannelStore, interval_s: float = CHECK_INTERVAL_S
    ) -> None:
        self.redis, self.store, self.interval_s = redis, store, interval_s

    async def ensure(self, always: bool = False) -> bool:
        """Copy every running channel into Redis unless it still holds them (or
        ``always``); True if it copied. A configuration record present stays (the packager
        may have put back the same one); the key digests are written from the database."""
        if not always and await self.redis.exists(CHANNELS_MIRRORED):
            return False
        running = await self.store.running()
        for channel, digest in running:
            channel_id = channel.name.removeprefix("channels/")
            await restore_channel_config(self.redis, channel_config(channel_id, channel))
            await publish_stream_key_digest(self.redis, channel_id, digest)
        await self.redis.set(CHANNELS_MIRRORED, "1")
        log.log(
            logging.DEBUG if always else logging.INFO,
            "copied %d channels from the database into Redis",
            len(running),
        )
        return True

    async def run(self) -> None:
        """Check every ``interval_s``, copy every ``RECONCILE_S``; an outage of either store
        is waited out."""
        last_full = time.monotonic()
        while True:
            full = time.monotonic() - last_full >= RECONCILE_S
            try:
                await self.ensure(always=full)
                last_full = time.monotonic() if full else last_full
            except Exception as exc:
                if not (isinstance(exc, STORE_DOWN) or database_down(exc)):
                    log.exception("copying the channels into Redis failed")
                # an outage of either store: the next tick tries again
            await asyncio.sleep(self.interval_s)
