"""Live viewers for the benches: LL-DASH segment readers cheap enough to run by thousands.

:class:`LiveViewer` reads over the load rig's raw keep-alive connection
(:class:`loadrig.segment_connection.EdgeLink`: the llhttp response parser, chunked transfer
decoded in C).  It counts body bytes and notes the arrival time of every CMAF chunk
(:class:`kernel.isobmff.ChunkScanner`) without keeping the body, so one client process can
hold thousands of viewers.  Benches import it through :mod:`_harness`, which puts the
repository on the path first.
"""

from __future__ import annotations

import time

import httptools

from kernel.isobmff import ChunkScanner
from loadrig.segment_connection import EdgeLink, SegmentConnection

SEGMENT_TIMEOUT_S = 30.0  # a bench reads live segments as they are made: bounded, not tight


class LiveViewer:
    """Reads segments ``first .. last`` of one representation, one after the other.

    One keep-alive connection (reopened if the server closes it).  For each chunk it
    records ``(segment, chunk_index, arrival_s)``, for each segment ``(segment,
    requested_s, first_byte_s)`` and the time of its last byte; bodies are only counted.
    """

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.link = EdgeLink(host, port)
        self.prefix = prefix  # e.g. "/t/TOKEN/live/ch/EPOCH/v360"
        self.chunks: list[tuple[int, int, float]] = []
        self.segments: list[tuple[int, float, float]] = []
        self.last_bytes: dict[int, float] = {}  # segment -> wall time its last byte arrived
        self.bytes = 0
        self.errors: list[str] = []

    async def connect(self) -> SegmentConnection:
        """The open keep-alive connection, (re)opened when needed (so a bench can open it
        ahead of the request it times)."""
        return await self.link.connect(SEGMENT_TIMEOUT_S)

    async def get(self, number: int) -> None:
        path = f"{self.prefix}/{number}.m4s"
        conn = await self.connect()
        arrivals: list[float] = []  # wall time each chunk's last piece arrived

        def chunk_done(_ordinal: int, _nbytes: int, _burst_s: float, _prft: bytes) -> None:
            arrivals.append(conn.last_byte)

        requested = time.time()
        await conn.send(self.link.request(path), ChunkScanner(chunk_done), SEGMENT_TIMEOUT_S)
        if conn.status != 200:
            raise RuntimeError(f"{path}: status {conn.status}")
        self.segments.append((number, requested, conn.first_byte))
        self.last_bytes[number] = conn.last_byte
        self.chunks += [(number, k, t) for k, t in enumerate(arrivals)]
        self.bytes += conn.bytes

    async def play(self, first: int, last: int, keep_going: bool = False) -> None:
        """Read the segments in turn; on a failure stop, or with ``keep_going`` go on."""
        try:
            for number in range(first, last + 1):
                try:
                    await self.get(number)
                except (OSError, RuntimeError, httptools.HttpParserError) as exc:
                    self.errors.append(f"{number}: {type(exc).__name__} {exc}")
                    if not keep_going:
                        return
        finally:
            self.link.close()
