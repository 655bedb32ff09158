"""The server scaffold every service runs on (DESIGN.md §6).

``grpc.aio`` server with the standard health service and server reflection, a
bounded number of concurrent RPCs (excess is rejected with RESOURCE_EXHAUSTED,
not queued), typed errors mapped to status codes in one interceptor, and a
graceful stop on SIGTERM: health flips to NOT_SERVING, in-flight calls get a grace
period, then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from services.common.errors import FIELD_METADATA_KEY, ServiceError
from services.resilience import server_interceptors
from services.resilience.context import Inbound
from services.resilience.handlers import Chain, Stage, StreamStep, UnaryStep

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT_RPCS = 2000
DEFAULT_GRACE_S = 5.0


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service to mount: its full name, servicer and generated ``add_*_to_server``."""

    name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if isinstance(exc, ServiceError):
        trailers = ((FIELD_METADATA_KEY, exc.field),) if exc.field else ()
        return exc.code, exc.message, trailers
    if isinstance(exc, grpc.aio.AioRpcError):  # a downstream call failed: pass its status on
        return exc.code(), exc.details() or "", ()
    log.exception("unexpected error in a handler")
    return grpc.StatusCode.INTERNAL, "internal error", ()


class ErrorInterceptor(Stage):
    """Maps :class:`ServiceError` to its status, a downstream call's error to that call's
    status and details (DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED... pass on);
    anything else to INTERNAL without a trace."""

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext, call: Inbound) -> Any:
            try:
                return await inner(request, context, call)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # every failure leaves as a status, never UNKNOWN
                code, message, trailers = _status_of(exc)
                await context.abort(code, message, trailing_metadata=trailers)

        return wrapped

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext, call: Inbound,
                          ) -> AsyncIterator[Any]:
            try:
                async for item in inner(request, context, call):
                    yield item
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                code, message, trailers = _status_of(exc)
                await context.abort(code, message, trailing_metadata=trailers)

        return wrapped


@dataclass
class RunningServer:
    """A started server: its port, its health servicer, and how to stop it."""

    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int
    host: str
    names: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """NOT_SERVING first (balancers stop sending), then drain for ``grace_s``."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_server(
    specs: Sequence[ServiceSpec],
    host: str = "127.0.0.1",
    port: int = 0,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Mount ``specs`` with health and reflection and start listening (port 0: any free)."""
    # the resilience layer (issue 4) goes outermost: trace, shed, deadline, faults; then the
    # error mapping, in the same one interceptor (each grpc.aio interceptor costs every call)
    server = grpc.aio.server(
        interceptors=[Chain([*server_interceptors(), ErrorInterceptor()]), *interceptors],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.so_reuseport", 0)],
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [spec.name for spec in specs]
    for spec in specs:
        spec.add(spec.servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, health=health, port=bound, host=host, names=names)


async def wait_for_termination_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
