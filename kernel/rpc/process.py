"""One process per service: the common command line, start-up and graceful stop.

Each service module exposes ``main(argv) -> int`` that calls :func:`service_main`
with its settings class (``kernel.config``) and a builder taking the loaded settings.
When ready the process prints ``{service}: {host}:{port}`` on a line of its own (a
launcher reads the port from there when it passed ``--port 0``), and the gRPC health
service answers SERVING. SIGTERM stops it gracefully. Its metrics are served on
``--metrics-port`` and its spans exported as its settings say (:mod:`kernel.rpc.telemetry`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from kernel import workers
from kernel.config import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    ConfigError,
    DatabaseSettings,
    ResilienceSettings,
    ServiceSettings,
    WorkersSettings,
    parse,
)
from kernel.db import EmbeddedDatabase, check_database
from kernel.heap import settle_heap
from kernel.loop import run
from kernel.redis_server import EmbeddedRedis, check_redis, redis_client
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.server import (
    RunningServer,
    ServiceSpec,
    start_server,
    termination_signal,
)
from kernel.rpc.telemetry import start_metrics, start_tracing


class Service:
    """A service's servicers plus whatever it runs beside them (sweepers, clients)."""

    def specs(self) -> list[ServiceSpec]:
        raise NotImplementedError

    async def start(self) -> None:
        """Start background work; called before the server takes calls."""

    async def close(self) -> None:
        """Release what :meth:`start` and the constructor took."""


async def serve(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 0,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
    resilience: ResilienceSettings | None = None,
    reuse_port: bool = False,
) -> RunningServer:
    """Start ``service`` and its gRPC server (tests use this with port 0); ``resilience``
    None: the layer's settings from the environment; ``reuse_port``: one of a group of
    workers on the port (:mod:`kernel.workers`)."""
    await service.start()
    return await start_server(
        service.specs(),
        host,
        port,
        max_concurrent_rpcs,
        resilience=resilience,
        reuse_port=reuse_port,
    )


S = TypeVar("S", bound=ServiceSettings)
Builder = Callable[[S, RpcChannelFactory], Awaitable[Service]]


def service_main(
    settings_class: type[S], argv: list[str] | None, build: Builder[S], needs_redis: bool = False
) -> int:
    """Load the service's settings (a bad one exits with code 2, as does one the builder
    finds missing: :class:`ConfigError`, and a Redis or database it names that cannot be
    reached), run the service until SIGTERM, return the exit code."""
    name = settings_class.kind
    parser = argparse.ArgumentParser(prog=f"livemesh {name}", description=f"the {name} service")
    settings = parse(settings_class, argv, parser)[0].settings
    if needs_redis and settings.redis_url:  # an operator's server: usable, or no start
        try:
            check_redis(settings.redis_url)
        except ConfigError as exc:
            parser.exit(2, f"livemesh {name}: {exc}\n")
    if isinstance(settings, DatabaseSettings) and settings.database_url:
        try:
            asyncio.run(check_database(settings.database_url))
        except ConfigError as exc:
            parser.exit(2, f"livemesh {name}: {exc}\n")
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(_run(name, settings, build, needs_redis), settings.uvloop)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    except workers.WorkerDied as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")
    return 0


async def _run(name: str, settings: S, build: Builder[S], needs_redis: bool) -> None:
    embedded: EmbeddedRedis | None = None
    if needs_redis and not settings.redis_url:
        embedded = EmbeddedRedis()
        settings = settings.model_copy(update={"redis_url": embedded.start()})
    database: EmbeddedDatabase | None = None
    if isinstance(settings, DatabaseSettings) and not settings.database_url:
        database = EmbeddedDatabase()
        settings = settings.model_copy(update={"database_url": database.url})
    tracing = start_tracing(name, settings)
    stop_metrics = start_metrics(settings.host, settings.metrics_port)
    factory = RpcChannelFactory()
    try:
        service = await build(settings, factory)
        size = workers.count(settings.workers) if isinstance(settings, WorkersSettings) else 1
        running = await serve(
            service,
            settings.host,
            settings.port,
            settings.max_concurrent_rpcs,
            settings,
            reuse_port=size > 1,
        )
        async with workers.group(size, running.port) as group:
            settle_heap()
            stopped = termination_signal()
            print(f"{name}: {running.target}", flush=True)
            await group.serve(stopped)
        await running.stop()
        await service.close()
    finally:
        await factory.close()
        if embedded is not None:
            embedded.stop()
        if database is not None:
            database.remove()
        if stop_metrics is not None:
            stop_metrics()
        if tracing is not None:
            tracing.shutdown()  # the last batch of spans leaves before the process does


def connect_redis(url: str, decode: bool = True) -> aioredis.Redis:
    """The control plane's Redis client: replies decoded to ``str`` unless ``decode`` is off."""
    return redis_client(url, decode_responses=decode)
