"""``livemesh qoe``: one QoE stream consumer with its /metrics; run more to scale."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket

from prometheus_client import REGISTRY, Counter, Histogram
from redis.exceptions import RedisError

from kernel import clock
from kernel.config import QoeSettings, parse
from kernel.loop import run
from kernel.redis_server import redis_client
from services.qoe.consumer import Consumer, ConsumerConfig
from services.qoe.health import Health
from services.qoe.probe import Beat
from services.qoe.probe import serve as serve_http

log = logging.getLogger("qoe")
RETRY_S = 0.5
LAG = Histogram(
    "livemesh_qoe_lag_seconds",
    "from an event's making at the edge to its window's commit",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
EVENTS = Counter("livemesh_qoe_events", "events counted into a window by this consumer")


def record_lag(times: list[int], now_ms: int) -> None:
    for ts in times:
        LAG.observe(max(0, now_ms - ts) / 1000)
    EVENTS.inc(len(times))


async def consume(consumer: Consumer, beat: Beat, stop: asyncio.Event) -> None:
    """Read and commit until ``stop``, noting each turn in ``beat`` (the probes' answer);
    a Redis that is down (or not up yet) is retried, never fatal."""
    ready = False
    while not stop.is_set():
        try:
            if not ready:
                await consumer.ensure_group()
                ready = True
            await consumer.step()
            beat.ok()
        except (RedisError, OSError) as exc:
            beat.failed(exc)
            log.warning("QoE read/commit failed: %r", exc)
            await asyncio.sleep(RETRY_S)


async def score(health: Health, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await health.update()
        except (RedisError, OSError) as exc:
            log.warning("QoE health update failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def serve(settings: QoeSettings) -> None:
    redis = redis_client(settings.required_redis_url())
    name = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
    config = ConsumerConfig(
        name=name,
        window_s=settings.window,
        batch=settings.batch,
        block_ms=settings.block_ms,
        claim_idle_ms=settings.claim_idle_ms,
    )
    consumer = Consumer(redis, config, record_lag)
    health = Health(redis, settings.window, REGISTRY)
    beat = Beat(turned_ms=clock.now_ms())
    server = serve_http(settings.metrics_host, settings.metrics_port, beat, REGISTRY)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY qoe {name} http://{settings.metrics_host}:{server.server_port}", flush=True)
    await asyncio.gather(consume(consumer, beat, stop), score(health, stop))
    server.shutdown()
    server.server_close()
    await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livemesh qoe", description="Aggregate players' QoE events from the edges."
    )
    settings = parse(QoeSettings, argv, parser)[0].settings
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    run(serve(settings), settings.uvloop)
    return 0
