"""``python -m edge.qoe_sender``: an edge node's QoE sender, its child process.

It reads the node's notes from stdin (frames: a 4-byte length, then a pickled list of
notes, :func:`edge.qoe.frame`; only its own parent writes there), parses their CMCD and
encodes the events (:func:`edge.qoe.encode`), and sends each frame to the
``lm:{qoe}:events`` stream as one pipeline of XADDs, each entry packing many events.
After each frame it writes its running totals to stdout (:class:`edge.qoe.SenderReport`),
which the node shows on its /metrics. A batch Redis has not taken within
``SEND_TIMEOUT_S`` is dropped and counted. At the end of stdin (the node closed it, or
died) it exits.

It runs at a lower CPU priority (``NICE``) than its node: on a busy machine the segments
go first and the telemetry waits (and, past the node's backlog bound, is dropped).

It ignores SIGINT: its lifetime is its node's, ended by the end of stdin. A Ctrl-C at a
terminal reaches the whole process group, and the sender would otherwise die with a
traceback before its node had closed the pipe (and lose the node's last notes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pickle
import signal
import sys

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge.qoe import FRAME_HEADER, Seen, SenderReport, encode
from kernel.cmcd import CmcdStats
from kernel.keys import QOE_EVENTS
from kernel.qoe_event import FIELD, PER_ENTRY, pack
from kernel.redis_server import redis_client

log = logging.getLogger("edge.qoe_sender")

STREAM_MAXLEN = 100_000  # entries (of up to PER_ENTRY events), approximate: oldest go
SEND_TIMEOUT_S = 2.0
NICE = 5


class Sender:
    def __init__(self, redis: Redis, edge: str, region: str) -> None:
        self.redis = redis
        self.edge = edge
        self.region = region
        self.stats = CmcdStats()
        self.report = SenderReport()

    async def send(self, notes: list[Seen]) -> None:
        lines = [
            line
            for line in (encode(n, self.edge, self.region, self.stats) for n in notes)
            if line is not None
        ]
        self.report.cmcd_dropped = self.stats.dropped
        if not lines:
            return
        pipe = self.redis.pipeline(transaction=False)
        for first in range(0, len(lines), PER_ENTRY):
            entry = pack(lines[first : first + PER_ENTRY])
            pipe.xadd(QOE_EVENTS, {FIELD: entry}, maxlen=STREAM_MAXLEN, approximate=True)
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.report.dropped += len(lines)
            self.report.failed_batches += 1
            failed = self.report.failed_batches
            if failed == 1 or failed % 100 == 0:
                log.warning("QoE batch dropped (%d so far): %r", failed, exc)
            return
        self.report.sent += len(lines)


async def serve(redis_url: str, edge: str, region: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    redis = redis_client(redis_url)
    sender = Sender(redis, edge, region)
    try:
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(FRAME_HEADER), "big")
                notes = pickle.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                return  # the node is done
            await sender.send(notes)
            sys.stdout.buffer.write(sender.report.line())
            sys.stdout.buffer.flush()
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.qoe_sender", description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--edge", required=True)
    parser.add_argument("--region", default="")
    args = parser.parse_args(argv)
    os.nice(NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.redis_url, args.edge, args.region))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
