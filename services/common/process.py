"""One process per service: the common command line, start-up and graceful stop.

Each service module exposes ``main(argv) -> int`` that calls :func:`service_main`
with a builder. When ready the process prints ``{service}: {host}:{port}`` on a
line of its own (a launcher reads the port from there when it passed ``--port 0``),
and the gRPC health service answers SERVING. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis

from livemesh.heap import settle_heap
from livemesh.redis_server import EmbeddedRedis, redis_client
from services.common.clients import ChannelFactory
from services.common.server import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    RunningServer,
    ServiceSpec,
    start_server,
    wait_for_termination_signal,
)

T = TypeVar("T")

DEFAULT_PORTS = {
    "registry": 50051,
    "identity": 50052,
    "catalog": 50053,
    "search": 50054,
    "profile": 50055,
    "recommend": 50056,
    "playback": 50057,
    "channels": 50058,
}


def default_target(service: str) -> str:
    """``LIVEMESH_{SERVICE}_TARGET``, else the service's default port on loopback."""
    return os.environ.get(f"LIVEMESH_{service.upper()}_TARGET") or (
        f"127.0.0.1:{DEFAULT_PORTS[service]}"
    )


class Service:
    """A service's servicers plus whatever it runs beside them (sweepers, clients)."""

    def specs(self) -> list[ServiceSpec]:
        raise NotImplementedError

    async def start(self) -> None:
        """Start background work; called before the server takes calls."""

    async def close(self) -> None:
        """Release what :meth:`start` and the constructor took."""


async def serve(
    service: Service, host: str = "127.0.0.1", port: int = 0,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
) -> RunningServer:
    """Start ``service`` and its gRPC server (tests use this with port 0)."""
    await service.start()
    return await start_server(service.specs(), host, port, max_concurrent_rpcs)


Builder = Callable[[argparse.Namespace, ChannelFactory], Awaitable[Service]]


def parser_for(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"livemesh {name}", description=f"the {name} service")
    parser.add_argument("--host", default=os.environ.get("LIVEMESH_HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int,
        default=int(os.environ.get(f"LIVEMESH_{name.upper()}_PORT", DEFAULT_PORTS.get(name, 0))),
        help="0 picks a free port (printed when ready)",
    )
    parser.add_argument("--max-concurrent-rpcs", type=int, default=DEFAULT_MAX_CONCURRENT_RPCS)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"),
        help="default: REDIS_URL, else a private embedded redis-server",
    )
    for dep in DEFAULT_PORTS:
        parser.add_argument(f"--{dep}-target", default=default_target(dep), help=f"{dep} service")
    return parser


def service_main(
    name: str, argv: list[str] | None, build: Builder,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    needs_redis: bool = False,
) -> int:
    """Parse the command line, run the service until SIGTERM, return the exit code."""
    parser = parser_for(name)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LIVEMESH_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    run(_run(name, args, build, needs_redis))
    return 0


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop (libuv's loop: cheaper socket reads and writes for
    aiohttp and redis; gRPC's own I/O does not use the loop's); ``LIVEMESH_UVLOOP=off``
    keeps the standard loop."""
    if os.environ.get("LIVEMESH_UVLOOP", "on") == "off":
        return asyncio.run(main)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _run(name: str, args: argparse.Namespace, build: Builder, needs_redis: bool) -> None:
    embedded: EmbeddedRedis | None = None
    if needs_redis and not args.redis_url:
        embedded = EmbeddedRedis()
        args.redis_url = embedded.start()
    factory = ChannelFactory()
    try:
        service = await build(args, factory)
        running = await serve(service, args.host, args.port, args.max_concurrent_rpcs)
        settle_heap()
        print(f"{name}: {running.target}", flush=True)
        await wait_for_termination_signal()
        await running.stop()
        await service.close()
    finally:
        await factory.close()
        if embedded is not None:
            embedded.stop()


def connect_redis(url: str, decode: bool = True) -> aioredis.Redis:
    """The control plane's Redis client: replies decoded to ``str`` unless ``decode`` is off."""
    return redis_client(url, decode_responses=decode)
