"""The server's own measure of its calls: a count by method and final status, and a
latency histogram by method (``livemesh_rpc_served*`` in :mod:`.metrics`).

It runs just inside the tracing stage, so calls the shedder refuses are counted
(RESOURCE_EXHAUSTED) and the time includes the layer's own stages. The metric children
of a method are looked up once, when its wrapper is built, so a call pays a counter step and
a histogram step, and no label lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Stage, StreamStep, UnaryStep
from kernel.rpc.resilience.metrics import SERVED, SERVED_SECONDS, child


def _code(ctx: grpc.aio.ServicerContext, error: BaseException) -> str:
    """The status a call that raised ``error`` leaves with: the one its abort set, else
    what gRPC answers for the error."""
    code = ctx.code()
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the caller left
        code = grpc.StatusCode.CANCELLED
    elif not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    name: str = code.name
    return name


class _Measure:
    """One method's metric children, and how a call of it is recorded."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.ok = child(SERVED, method, "OK")
        self.seconds = child(SERVED_SECONDS, method)

    def done(
        self, start: float, ctx: grpc.aio.ServicerContext, error: BaseException | None = None
    ) -> None:
        """A call begun at ``start`` (``time.perf_counter``) ended, raising ``error`` if any."""
        counter = self.ok if error is None else child(SERVED, self.method, _code(ctx, error))
        counter.inc()
        self.seconds.observe(time.perf_counter() - start)


class ServedMetrics(Stage):
    """Counts and times every unary and server-streaming call."""

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        measure = _Measure(method)

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            start = time.perf_counter()
            try:
                reply = await inner(request, ctx, call)
            except BaseException as error:
                measure.done(start, ctx, error)
                raise
            measure.done(start, ctx)
            return reply

        return handle

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        measure = _Measure(method)

        async def handle(
            request: Any, ctx: grpc.aio.ServicerContext, call: Inbound
        ) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async for item in inner(request, ctx, call):
                    yield item
            except BaseException as error:
                measure.done(start, ctx, error)
                raise
            measure.done(start, ctx)

        return handle
