"""The channels one ingest process runs, and how a broadcaster's key finds its channel's source.

Two kinds: channels named at start (``--channel``) go on air at once, with the slate;
with ``--any-channel`` every other channel the channels service created is taken too,
put on air when its first broadcaster presents a valid key, so an operator's new channel
needs no restart of ingest and costs no encoder until someone broadcasts.  Once on air a
channel stays on air (the slate between broadcasters), as a named one does, so its epoch
and segment numbering survive a broadcaster coming and going, until the channels service
ends it: then its broadcaster, if one is still pushing, is cut (told why, then closed)
and it goes off air (its encoder stops; an ended channel is never taken again).
``--not-channel`` names channels that another packager runs (the demo's test source): a
key for one of those is refused, as two packagers on one channel would interleave their
epochs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import channel_ended, get_channel_config, wait_until_ended
from live.channel import LiveChannel
from live.ingest.ingest_source import IngestSource
from live.ingest.status import IngestStatusWriter
from live.state import ChannelStore

log = logging.getLogger("livemesh.ingest")
END_RETRY_S = 1.0  # between reads of a channel's end while Redis is away


class SourceLookup(Protocol):
    async def source_for(self, channel: str) -> IngestSource | None:
        """The source a broadcaster of ``channel`` feeds, or ``None``: not taken here."""
        ...


class IngestChannels:
    """The channels on air in this process, started at once or at their first broadcaster."""

    def __init__(
        self,
        redis: aioredis.Redis,
        configs: list[ChannelConfig],
        any_channel: bool = False,
        not_channels: frozenset[str] = frozenset(),
    ) -> None:
        self.redis = redis
        self.named = configs
        self.any_channel, self.not_channels = any_channel, not_channels
        self.sources: dict[str, IngestSource] = {}
        self.channels: dict[str, LiveChannel] = {}
        self.runs: dict[str, asyncio.Task[None]] = {}  # each channel's encoder, while on air
        self._ends: dict[str, asyncio.Task[None]] = {}  # each waits for its channel's end
        self._starting: dict[str, asyncio.Task[IngestSource]] = {}
        self.status: dict[str, IngestStatusWriter] = {}  # each channel's, while on air

    async def start(self) -> None:
        """The named channels on air (slate): their epochs begin before any broadcaster."""
        for config in self.named:
            await self._on_air(config)

    @property
    def on_air(self) -> bool:
        return all(c.started.is_set() for c in self.channels.values())

    async def source_for(self, channel: str) -> IngestSource | None:
        if channel in self.sources:
            return self.sources[channel]
        if not self.any_channel or channel in self.not_channels:
            return None
        starting = self._starting.get(channel)
        if starting is None:  # one start however many broadcasters ask at once
            starting = asyncio.create_task(self._start_new(channel))
            self._starting[channel] = starting
        try:
            return await asyncio.shield(starting)
        except LookupError:
            return None
        finally:
            if starting.done():
                self._starting.pop(channel, None)

    async def _start_new(self, channel: str) -> IngestSource:
        config = await get_channel_config(self.redis, channel)
        if config is None or await channel_ended(self.redis, channel):
            raise LookupError(channel)  # a key outlived its channel: nothing to run
        log.info("ingest: channel %s goes on air for its first broadcaster", channel)
        return await self._on_air(config)

    async def _on_air(self, config: ChannelConfig) -> IngestSource:
        source = IngestSource(config)
        channel = LiveChannel(config, ChannelStore(self.redis, config.name), source)
        run = asyncio.create_task(channel.run(), name=f"ingest-channel-{config.name}")
        started = asyncio.create_task(channel.started.wait())
        done, _ = await asyncio.wait({run, started}, return_when=asyncio.FIRST_COMPLETED)
        if run in done:
            started.cancel()
            run.result()  # raises why the channel could not go on air
        self.runs[config.name] = run
        self.channels[config.name], self.sources[config.name] = channel, source
        self.status[config.name] = IngestStatusWriter(self.redis, source)
        self._ends[config.name] = asyncio.create_task(self._off_air_when_ended(config.name))
        return source

    async def _off_air_when_ended(self, name: str) -> None:
        """Once the channels service ends the channel, cut its broadcaster and stop encoding
        it (the slate too)."""
        while True:
            try:
                await wait_until_ended(self.redis, name)
                break
            except (RedisError, OSError) as exc:  # Redis away: the channel stays on air
                log.warning("ingest: channel %s: its end unread (%r): again", name, exc)
                await asyncio.sleep(END_RETRY_S)
        log.info("ingest: channel %s ended: its broadcaster cut, off air", name)
        self._ends.pop(name, None)
        self.sources.pop(name).end()  # a broadcaster still pushing is told, then closed
        await self.status.pop(name).close()
        self.channels.pop(name).stop()
        await self.runs.pop(name)

    async def stop(self) -> None:
        for task in [*self._starting.values(), *self._ends.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for status in self.status.values():
            await status.close()
        for channel in self.channels.values():
            channel.stop()
        for run in self.runs.values():
            await run
