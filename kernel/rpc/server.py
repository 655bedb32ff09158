"""The server scaffold every service runs on (DESIGN.md §6).

``grpc.aio`` server with the standard health service and server reflection, a
bounded number of concurrent RPCs (excess is rejected with RESOURCE_EXHAUSTED,
not queued), typed errors mapped to status codes in one interceptor, and a
graceful stop on SIGTERM: health flips to NOT_SERVING, in-flight calls get a grace
period, then the process exits. With TLS settings it listens on TLS only and requires a
client certificate (:mod:`kernel.rpc.tls`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.exceptions
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from kernel.config import DEFAULT_MAX_CONCURRENT_RPCS, ResilienceSettings
from kernel.db import database_down
from kernel.outage import OutageLog
from kernel.rpc import credentials
from kernel.rpc.access import HEALTH_CHECK, AccessStage, Guard, declared
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.errors import FIELD_METADATA_KEY, ServiceError
from kernel.rpc.resilience import server_interceptors
from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Chain, Stage, StreamStep, UnaryStep
from kernel.rpc.tls import TlsOption, TlsPaths, chosen, server_credentials

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 5.0


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service to mount: its full name, servicer and generated ``add_*_to_server``,
    and the verifier of its viewers' tokens when it has viewer methods."""

    name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]
    viewers: TokenVerifier | None = None


def guards_of(specs: Sequence[ServiceSpec]) -> dict[str, Guard]:
    """Every implemented method's access declaration, by full method name; TypeError naming
    the first implemented method that declares none (the server does not start)."""
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    guards = {f"/{health.full_name}/{m.name}": HEALTH_CHECK for m in health.methods}
    for spec in specs:
        service = descriptor_pool.Default().FindServiceByName(spec.name)
        for method in service.methods:
            access = declared(spec.servicer, method.name)
            if access is None and _generated(getattr(spec.servicer, method.name)):
                continue  # not implemented: UNIMPLEMENTED (after the stage refuses it)
            if access is None:
                raise TypeError(f"{spec.name}/{method.name} declares no access (kernel.rpc.access)")
            guards[f"/{spec.name}/{method.name}"] = Guard(access, spec.viewers)
    return guards


def _generated(behaviour: Any) -> bool:
    """Whether ``behaviour`` is the generated servicer base's (which answers UNIMPLEMENTED)."""
    return str(getattr(behaviour, "__module__", "")).endswith("_pb2_grpc")


def credential_verifier() -> TokenVerifier | None:
    """The verifier of operator, node and service credentials, from the configured key."""
    public = credentials.public_key_from_env()
    return None if public is None else credentials.credential_verifier(public)


# the state store cannot be reached (a closed socket, a refused connect, a timeout, a
# server still loading its data, LOADING being a ConnectionError in redis-py); the
# database's driver says the same in its own errors (kernel.db.database_down)
STORE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
STORE_DOWN_MESSAGE = "state store unavailable"


def _status_of(
    exc: Exception, outage: OutageLog
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if isinstance(exc, ServiceError):
        trailers = ((FIELD_METADATA_KEY, exc.field),) if exc.field else ()
        return exc.code, exc.message, trailers
    if isinstance(exc, grpc.aio.AioRpcError):  # a downstream call failed: pass its status on
        return exc.code(), exc.details() or "", ()
    if isinstance(exc, STORE_DOWN) or database_down(
        exc
    ):  # retryable, and logged once per outage, not per call
        outage.failed(f"{type(exc).__name__}: {exc}")
        return grpc.StatusCode.UNAVAILABLE, STORE_DOWN_MESSAGE, ()
    log.exception("unexpected error in a handler")
    return grpc.StatusCode.INTERNAL, "internal error", ()


class ErrorInterceptor(Stage):
    """Maps :class:`ServiceError` to its status, a downstream call's error to that call's
    status and details (DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED... pass on), an
    unreachable state store to UNAVAILABLE (one log line per outage, see
    :class:`OutageLog`); anything else to INTERNAL without a trace."""

    def __init__(self) -> None:
        self.outage = OutageLog("state store (Redis)", log)

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext, call: Inbound) -> Any:
            try:
                reply = await inner(request, context, call)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # every failure leaves as a status, never UNKNOWN
                code, message, trailers = _status_of(exc, self.outage)
                await context.abort(code, message, trailing_metadata=trailers)
            self.outage.succeeded()
            return reply

        return wrapped

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        async def wrapped(
            request: Any,
            context: grpc.aio.ServicerContext,
            call: Inbound,
        ) -> AsyncIterator[Any]:
            try:
                async for item in inner(request, context, call):
                    yield item
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                code, message, trailers = _status_of(exc, self.outage)
                await context.abort(code, message, trailing_metadata=trailers)
            self.outage.succeeded()

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
    resilience: ResilienceSettings | None = None,
    tls: TlsOption = "settings",
    reuse_port: bool = False,
) -> RunningServer:
    """Mount ``specs`` with health and reflection and start listening (port 0: any free);
    ``resilience`` None: the layer's settings from the environment; ``tls``: the process's
    settings unless told (None: plaintext); ``reuse_port``: the port is shared with the
    other workers of a group (:mod:`kernel.workers`), else binding a taken port fails."""
    access = AccessStage(guards_of(specs), credential_verifier())
    # the resilience layer (issue 4) goes outermost: trace, shed, deadline, faults; then the
    # error mapping, then access (its refusals leave as statuses), in the same one
    # interceptor (each grpc.aio interceptor costs every call)
    server = grpc.aio.server(
        interceptors=[
            Chain([*server_interceptors(settings=resilience), ErrorInterceptor(), access]),
            *interceptors,
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.so_reuseport", int(reuse_port))],
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [spec.name for spec in specs]
    for spec in specs:
        spec.add(spec.servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    bound = listen(server, f"{host}:{port}", chosen(tls))
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, health=health, port=bound, host=host, names=names)


def listen(server: grpc.aio.Server, address: str, tls: TlsPaths | None) -> int:
    """One port: TLS only when there are TLS files (no plaintext port beside it)."""
    if tls is None:
        port: int = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls))
    return port


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def termination_signal() -> asyncio.Future[None]:
    """A future that SIGTERM or SIGINT completes, their handlers installed now: a process
    takes it before it prints its ready line, so that a signal sent on reading that line
    stops it gracefully instead of killing it (the default action); the handlers go when
    the future is done or cancelled."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[None] = loop.create_future()

    def fire() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def remove(_: asyncio.Future[None]) -> None:
        for sig in TERMINATION_SIGNALS:
            loop.remove_signal_handler(sig)

    for sig in TERMINATION_SIGNALS:
        loop.add_signal_handler(sig, fire)
    stopped.add_done_callback(remove)
    return stopped
