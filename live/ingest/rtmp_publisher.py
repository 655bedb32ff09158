"""One RTMP publisher: the relay to its private FFmpeg listener, and its decode thread.

The relay holds the client's ``publish`` back until the stream key is checked, then
stops parsing and only copies bytes; the decode thread feeds the channel's
:class:`IngestFeed` (one clock for audio and video: FLV timestamps share it).  A
watchdog ends a publisher whose bytes decode to nothing.  A publisher cut off (the
channel ended, a new broadcaster evicted it, no media) is sent an ``onStatus``
``NetStream.Publish.Denied`` naming why before its connection closes: FFmpeg's side of
the relay is stopped first and the status chunked at the size FFmpeg set, so the
client reads it as one more message from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, Protocol

import av
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from kernel import clock
from kernel.ports import PortPool
from live.ingest.admission import Admission
from live.ingest.channels import SourceLookup
from live.ingest.ingest_source import ChannelBusy, ChannelEnded, IngestFeed
from live.ingest.keys import StreamKeys
from live.ingest.rtmp_messages import CommandReader, RtmpRefused, connect_rejected, publish_status

log = logging.getLogger("livemesh.ingest.rtmp")


class PublisherHost(Protocol):
    """What a publisher needs of the front that accepted it (the front is
    :class:`live.ingest.rtmp.RtmpFront`; naming only this keeps the two modules apart)."""

    sources: SourceLookup
    keys: StreamKeys
    admission: Admission
    ports: PortPool
    loop: asyncio.AbstractEventLoop | None


RTMP_APP = "live"
PUBLISH_TIMEOUT_S = 10.0  # connect to publish, at most
LISTENER_START_S = 3.0  # FFmpeg's private listener must be up by then
LISTENER_RETRY_S = 0.01  # between attempts to reach it
READ_TIMEOUT_S = 5.0  # a publisher silent this long is gone
NO_MEDIA_S = 5.0  # an accepted publisher whose bytes decode to nothing this long is ended
CUT_WRITE_S = 1.0  # a publisher cut off is given this long to take its status message
DENIED = "NetStream.Publish.Denied"

PUBLISHERS = Counter("livemesh_rtmp_publishers", "RTMP publish attempts by outcome", ["outcome"])


class RtmpPublisher:
    """One publisher: the relay to a private FFmpeg listener, and its decode thread."""

    def __init__(
        self, front: PublisherHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.front = front
        self.client_reader, self.client_writer = reader, writer
        self.port = front.ports.reserve()
        self.feed: IngestFeed | None = None
        self.channel: str | None = None
        self.stream_id = 1  # the message stream the client publishes on
        self.declared_rate: float | None = None  # the FLV stream's frame rate, once open
        self.replies = CommandReader()  # FFmpeg's side, read for its chunk size only
        self._back: asyncio.Task[None] | None = None  # relays FFmpeg's side to the client
        self._cutting: asyncio.Task[None] | None = None
        self._relay_ended = asyncio.Event()  # the client closed, or the relay broke
        self.stopping = threading.Event()
        self.decoded = threading.Event()
        self.admitted = True  # holds an admission slot until it publishes or leaves
        self.thread = threading.Thread(target=self._decode, name=f"rtmp-{self.port}", daemon=True)

    async def run(self) -> None:
        self.thread.start()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        watchdog = asyncio.create_task(self._watchdog())
        try:
            upstream = await self._connect_listener()
            await self._relay(*upstream)
        except (RtmpRefused, ConnectionError, TimeoutError) as exc:
            log.info("rtmp: publisher from %s refused or gone: %s", self._peer(), exc)
        finally:
            self._relay_ended.set()
            watchdog.cancel()
            self._admitted_done()
            self.stopping.set()
            for w in (self.client_writer, upstream[1] if upstream else None):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            await asyncio.to_thread(self.thread.join, 10)
            if not self.thread.is_alive():
                self.front.ports.release(self.port)
            if self.feed is not None:
                self.feed.close()
                log.info("rtmp: channel %s publisher left", self.channel)

    def _peer(self) -> str:
        return str(self.client_writer.get_extra_info("peername"))

    async def _connect_listener(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """FFmpeg opens its listener in the decode thread; it has no ready signal, so retry
        (while that thread lives, up to ``LISTENER_START_S``)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, ConnectionRefusedError) and self.thread.is_alive()
            ),
            wait=wait_fixed(LISTENER_RETRY_S),
            stop=stop_after_delay(LISTENER_START_S),
            reraise=True,
        )
        return await retrying(asyncio.open_connection, "127.0.0.1", self.port)

    async def _relay(
        self, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        async def downstream() -> None:
            while data := await up_reader.read(65536):
                with contextlib.suppress(RtmpRefused):  # FFmpeg's; only its sizes matter
                    self.replies.feed(data)
                self.client_writer.write(data)
                await self.client_writer.drain()

        self._back = asyncio.create_task(downstream())
        try:
            commands = CommandReader()
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                while self.feed is None:
                    data = await self.client_reader.read(65536)
                    if not data:
                        return
                    try:
                        for name, args in commands.feed(data):
                            await self._command(name, args, commands.stream_id)
                    except RtmpRefused as refused:
                        await self._refuse(refused)
                        raise
                    up_writer.write(data)  # the publish command only once it is accepted
                    await up_writer.drain()
            self._admitted_done()
            while data := await self.client_reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()
        finally:
            await self._stop_replies()

    async def _stop_replies(self) -> None:
        """Stop relaying FFmpeg's side: what the client reads next is ours alone."""
        back = self._back
        if back is not None:
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await back

    async def _refuse(self, refused: RtmpRefused) -> None:
        """Stop relaying FFmpeg's replies, then tell the client why it is turned away."""
        await self._stop_replies()
        await self._say(refused.reply)

    async def _say(self, message: bytes) -> None:
        """Write ``message`` to the client if it can be read as a whole message now."""
        if not message or not self.replies.between_chunks:
            return  # a half-relayed chunk of FFmpeg's would swallow it: just close
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(CUT_WRITE_S):
                self.client_writer.write(message)
                await self.client_writer.drain()

    def _admitted_done(self) -> None:
        if self.admitted:
            self.admitted = False
            self.front.admission.done()

    async def _command(self, name: str, args: list[Any], stream_id: int = 1) -> None:
        if name == "connect":
            app = args[1].get("app", "") if len(args) > 1 and isinstance(args[1], dict) else ""
            if str(app).strip("/") != RTMP_APP:
                PUBLISHERS.labels("bad_app").inc()
                transaction = args[0] if args and isinstance(args[0], float) else 1.0
                reason = f"app {app!r} is not {RTMP_APP!r}"
                size = self.replies.chunk_size
                raise RtmpRefused(reason, connect_rejected(transaction, reason, size))
        elif name == "publish":
            stream_name = str(args[2]) if len(args) > 2 else ""
            key, _, query = stream_name.partition("?")
            backup = "backup=1" in query.split("&")
            channel = await self.front.keys.channel_for(key)
            source = await self.front.sources.source_for(channel) if channel else None
            size = self.replies.chunk_size
            if channel is None or source is None:
                PUBLISHERS.labels("bad_key").inc()
                bad = publish_status(
                    stream_id, "NetStream.Publish.BadName", "wrong stream key", size
                )
                raise RtmpRefused("wrong stream key", bad)
            try:
                self.feed = source.attach(
                    shared_clock=True, on_cut=self._cut_from_any_thread, backup=backup
                )
            except (ChannelBusy, ChannelEnded) as exc:
                busy = isinstance(exc, ChannelBusy)
                PUBLISHERS.labels("busy" if busy else "ended").inc()
                reason = f"channel {channel} " + (
                    "already has a broadcaster" if busy else "has ended"
                )
                raise RtmpRefused(reason, publish_status(stream_id, DENIED, reason, size)) from exc
            self.channel, self.stream_id = channel, stream_id
            PUBLISHERS.labels("accepted").inc()
            log.info("rtmp: channel %s publisher from %s accepted", channel, self._peer())

    def _cut_from_any_thread(self, why: str) -> None:
        """The feed's ``on_cut``: the decode thread cuts too (a backup that disagrees)."""
        loop = self.front.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cut, why)

    def _cut(self, why: str) -> None:
        """Cut off (on the loop): tell the client ``why``, then close its connection."""
        if self._cutting is None:
            log.info("rtmp: channel %s publisher cut off: %s", self.channel, why)
            self._cutting = asyncio.create_task(self._tell_and_close(why))

    async def _tell_and_close(self, why: str) -> None:
        """The status, then our FIN; the client's media is still read (an abort with it
        unread would be a reset, which may discard the status before the client reads
        it) until the client hangs up or :data:`CUT_WRITE_S` passes."""
        await self._stop_replies()
        await self._say(publish_status(self.stream_id, DENIED, why, self.replies.chunk_size))
        with contextlib.suppress(OSError, RuntimeError):
            self.client_writer.write_eof()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._relay_ended.wait(), CUT_WRITE_S)
        self.stopping.set()  # only now: the decode thread's end aborts the connection
        self.client_writer.transport.abort()

    async def _watchdog(self) -> None:
        """End a publisher whose bytes stop decoding (garbage, a stalled encoder)."""
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)  # a periodic check: there is no event for "nothing"
            feed = self.feed
            if feed is None or feed.detached:
                continue
            last = feed.last_arrival_ms or feed.attached_ms
            if clock.now_ms() - last > NO_MEDIA_S * 1000:
                log.info("rtmp: channel %s publisher sent no media: ended", self.channel)
                PUBLISHERS.labels("no_media").inc()
                self._cut("no media decoded")
                return

    def _decode(self) -> None:
        """FFmpeg's listener: demux and decode, hand frames to the feed (a worker thread)."""
        url = f"rtmp://127.0.0.1:{self.port}/{RTMP_APP}/ingest"
        try:
            with av.open(
                url,
                options={"listen": "1"},
                timeout=(LISTENER_START_S + PUBLISH_TIMEOUT_S, READ_TIMEOUT_S),
            ) as container:
                streams = [s for s in container.streams if s.type in ("video", "audio")]
                video = container.streams.video
                rate = video[0].average_rate if video else None  # FLV metadata's framerate
                self.declared_rate = float(rate) if rate else None
                for packet in container.demux(streams):
                    if self.stopping.is_set():
                        break
                    for frame in packet.decode():
                        self._deliver(frame)
        except (av.FFmpegError, OSError) as exc:
            if not self.stopping.is_set():
                log.info("rtmp: listener on %d ended: %s", self.port, exc)
        finally:
            self.stopping.set()
            loop = self.front.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.client_writer.transport.abort)

    def _deliver(self, frame: Any) -> None:
        feed = self.feed
        if feed is None or feed.detached or frame.time is None:
            return
        if isinstance(frame, av.VideoFrame):
            if feed.params is None:
                feed.declared_rate = self.declared_rate
            feed.video(frame, float(frame.time), clock.now_ms())
        elif isinstance(frame, av.AudioFrame):
            feed.audio(frame, float(frame.time), clock.now_ms())
        self.decoded.set()
