"""Wrapping a server method handler's behaviour, once per method: the base of every
server interceptor of the layer (unary-unary and unary-stream).

A ``grpc.aio`` server interceptor runs for every call, and one that rebuilds the
handler each time (closures, a new ``RpcMethodHandler``) pays for that on every call.
A :class:`Stage` builds its wrapper once per method and hands the same handler back
as long as the one inside it is the same. What depends on the call comes with it:
the servicer context, and the layer's reading of the call's metadata
(:class:`~kernel.rpc.resilience.context.Inbound`, read once for all stages).
:class:`Chain` runs several stages as one interceptor, so the layer costs gRPC one
interceptor level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from kernel.rpc.resilience.context import Inbound

# a servicer's behaviour, as gRPC calls it
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
# the same inside the layer's stages, with the call's metadata read
UnaryStep = Callable[[Any, grpc.aio.ServicerContext, Inbound], Awaitable[Any]]
StreamStep = Callable[[Any, grpc.aio.ServicerContext, Inbound], AsyncIterator[Any]]


def method_of(details: grpc.HandlerCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class Stage(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """A server interceptor that wraps each method's behaviour once.

    Subclasses override :meth:`unary` and/or :meth:`stream` (the default leaves the
    behaviour as it is); client-streaming handlers are never wrapped."""

    def __init__(self) -> None:
        # method -> (the handler given, the handler made of it); unknown methods (no
        # handler) are not kept, so a caller cannot grow this with made-up names
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        return inner

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        return inner

    def wrap(
        self,
        method: str,
        handler: grpc.RpcMethodHandler | None,
    ) -> grpc.RpcMethodHandler | None:
        """``handler`` with its behaviour passed through :meth:`unary` or :meth:`stream`,
        made once per method and inner handler."""
        if handler is None or handler.request_streaming:
            return handler
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler.unary_unary is not None:
            wrapped = handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        elif handler.unary_stream is not None:
            wrapped = handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        else:
            wrapped = handler
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def _unary(self, method: str, behaviour: Unary) -> Unary:
        steps = self.unary(method, lambda request, ctx, _: behaviour(request, ctx))

        async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            return await steps(request, ctx, Inbound(ctx.invocation_metadata()))

        return handle

    def _stream(self, method: str, behaviour: Stream) -> Stream:
        steps = self.stream(method, lambda request, ctx, _: behaviour(request, ctx))

        async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in steps(request, ctx, Inbound(ctx.invocation_metadata())):
                yield item

        return handle

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return self.wrap(method_of(handler_call_details), handler)


class Chain(Stage):
    """Several stages as one interceptor, the first outermost."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        super().__init__()
        self.stages = list(stages)

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        for stage in reversed(self.stages):
            inner = stage.unary(method, inner)
        return inner

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        for stage in reversed(self.stages):
            inner = stage.stream(method, inner)
        return inner
