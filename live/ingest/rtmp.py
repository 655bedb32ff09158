"""RTMP ingest (``rtmp://host:1935/live/<stream key>``), the key enforced by livemesh.

FFmpeg's RTMP listener (through PyAV) speaks the protocol and demuxes FLV, but
takes any stream name with only a warning and serves one connection per
listen.  So a small front owns port 1935: for every publisher it starts a
private FFmpeg listener on a loopback port and relays the bytes both ways,
reading the client's side up to its ``publish`` command (RTMP chunk stream,
AMF0).  The command is held back until the key is checked: a wrong key, an
app other than ``live``, or a channel that already has a broadcaster closes
the connection before FFmpeg sees a byte of media, after telling the client
why (``onStatus`` ``NetStream.Publish.BadName`` for a wrong key,
``NetStream.Publish.Denied`` for a busy channel, ``_error``
``NetConnection.Connect.Rejected`` for a wrong app), so its log names the cause.
A stream name ``<key>?backup=1`` publishes the channel's backup feed (dual ingest,
:mod:`live.ingest.feed_params`); one whose picture disagrees with the primary's is
cut once its first picture decodes, with an ``onStatus`` ``NetStream.Publish.Denied``
naming the difference (FFmpeg logs ``Server error: the backup feed is ...``).
Once accepted, the relay stops parsing and the decode thread feeds the
channel's :class:`IngestFeed` (:mod:`live.ingest.rtmp_publisher`; the commands
are read by :mod:`live.ingest.rtmp_messages`).

Connections are admitted first (:mod:`live.ingest.admission`): a client
connecting too often, or too many connections not yet publishing, are closed
before a listener is started for them.  The private listeners take ports from
:class:`kernel.ports.PortPool`, below the ephemeral range.
"""

from __future__ import annotations

import asyncio
import logging

from kernel import clock
from kernel.ports import NoFreePort, PortPool
from live.ingest.admission import Admission, Verdict
from live.ingest.channels import SourceLookup
from live.ingest.keys import StreamKeys
from live.ingest.rtmp_publisher import PUBLISHERS, RTMP_APP, RtmpPublisher

log = logging.getLogger("livemesh.ingest.rtmp")

PRIVATE_PORTS = range(21000, 29000)  # FFmpeg's private listeners; below 32768 (ephemeral)


class RtmpFront:
    """Port 1935: every connection becomes an :class:`RtmpPublisher`."""

    def __init__(
        self,
        sources: SourceLookup,
        keys: StreamKeys,
        host: str,
        port: int,
        admission: Admission | None = None,
    ) -> None:
        self.sources, self.keys = sources, keys
        self.admission = admission if admission is not None else Admission()
        self.ports = PortPool(PRIVATE_PORTS)
        self.host, self.port = host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.publishers: set[RtmpPublisher] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ingest: RTMP on rtmp://%s:%d/%s/<stream key>", self.host, self.port, RTMP_APP)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        verdict = self.admission.admit(client, clock.now_ms())
        if verdict is not Verdict.ADMITTED:
            PUBLISHERS.labels(verdict.value).inc()
            writer.transport.abort()
            return
        try:
            publisher = RtmpPublisher(self, reader, writer)
        except NoFreePort:
            self.admission.done()
            writer.transport.abort()
            return
        self.publishers.add(publisher)
        try:
            await publisher.run()
        finally:
            self.publishers.discard(publisher)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for publisher in list(self.publishers):
            publisher.stopping.set()
            publisher.client_writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
