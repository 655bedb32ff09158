"""The one way a service reaches another: :class:`RpcChannelFactory` (DESIGN.md §6).

"Channel" in livemesh means a live channel; the gRPC connections made here are RPC
channels, and the factory's name says so.

Every outbound gRPC call goes through a channel made here, so the resilience
layer (issue 4: deadline propagation, retries, hedging, bulkheads, breakers,
client-side balancing; :mod:`kernel.rpc.resilience`) is added in this one place: the
channel handed out is the layer's, over plain channels to each instance. Without
the layer (``layer=None``) a :class:`DeadlineInterceptor` still guarantees that no
call leaves without a deadline. Channels belong to one event loop (a grpc.aio
fact), so they are cached per loop. With TLS settings (:mod:`kernel.rpc.tls`) every
channel is mTLS: the process's certificate presented, only its CA trusted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from kernel.rpc.tls import Reloading, TlsOption, channel_credentials, chosen

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_STREAM_TIMEOUT_S = 300.0

StubT = TypeVar("StubT")


class DeadlineInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc ships no types
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Gives every call that has none a deadline: per method, else the default."""

    def __init__(
        self,
        default_s: float = DEFAULT_TIMEOUT_S,
        stream_default_s: float = DEFAULT_STREAM_TIMEOUT_S,
        per_method_s: dict[str, float] | None = None,
    ) -> None:
        self.default_s = default_s
        self.stream_default_s = stream_default_s
        self.per_method_s = dict(per_method_s or {})

    def _details(self, details: grpc.aio.ClientCallDetails, fallback: float) -> Any:
        if details.timeout is not None:
            return details
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        timeout = self.per_method_s.get(method, fallback)
        return grpc.aio.ClientCallDetails(
            details.method,
            timeout,
            details.metadata,
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details, self.default_s), request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = self._details(client_call_details, self.stream_default_s)
        return await continuation(details, request)


class RpcChannelFactory:
    """Makes and caches the channels of one process; closing it closes them all."""

    def __init__(
        self,
        deadlines: DeadlineInterceptor | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        service_config: dict[str, Any] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        layer: Any = "resilience",
        tls: TlsOption = "settings",
    ) -> None:
        # the resilience layer (issue 4) balances, retries and guards over plain channels
        # from connect(); layer=None gives the plain channel itself
        if layer == "resilience":
            from kernel.rpc.resilience import ResilienceLayer

            layer = ResilienceLayer()
        self.layer = layer
        self.deadlines = deadlines or DeadlineInterceptor()
        self.interceptors = list(interceptors)
        self.service_config = service_config or {"loadBalancingConfig": [{"round_robin": {}}]}
        self.options = list(options)
        # the process's own settings unless told (tls=None: plaintext)
        paths = chosen(tls)
        self.credentials = None if paths is None else Reloading(paths, channel_credentials)
        self._channels: dict[tuple[int, str], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[int, str, Any], Any] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        """The channel to ``target`` (``host:port`` or any gRPC target) for this event loop."""
        key = (id(asyncio.get_running_loop()), target)
        channel = self._channels.get(key)
        if channel is None:
            if self.layer is not None:
                channel = self.layer.channel(target, self.connect)
            else:
                channel = self.connect(target)
            self._channels[key] = channel
        return channel

    def connect(self, target: str) -> grpc.aio.Channel:
        """A plain channel to ``target``, a connection of its own (the resilience layer
        makes several per instance: :data:`kernel.rpc.resilience.balancer.CONNECTIONS`).

        Under the layer it has no deadline interceptor: the layer gives every call its
        deadline, and any interceptor puts each call on grpc.aio's intercepted path
        (an extra task and several awaits per call). With TLS it uses the files as they are
        now: a rotation reaches the channels made after it."""
        options = [
            ("grpc.service_config", json.dumps(self.service_config)),
            # a connection of its own: gRPC shares one between channels to the same address
            # by default, and the balancer's connections to an instance must be distinct
            ("grpc.use_local_subchannel_pool", 1),
            *self.options,
        ]
        interceptors = [*([self.deadlines] if self.layer is None else []), *self.interceptors]
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options, interceptors=interceptors or None)
        credentials, _ = self.credentials.get()
        return grpc.aio.secure_channel(
            target, credentials, options, interceptors=interceptors or None
        )

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT], target: str) -> StubT:
        """A generated stub on the channel to ``target``, made once per loop and target (a
        stub builds one multi-callable per method of its service: hot paths ask per call)."""
        key = (id(asyncio.get_running_loop()), target, stub_class)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = stub_class(self.channel(target))
        return stub

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._stubs = {}
        for channel in channels:
            await channel.close()
