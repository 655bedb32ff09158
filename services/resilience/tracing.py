"""OpenTelemetry traces across hops: W3C ``traceparent`` in gRPC metadata, a span
per inbound call (server interceptor) and per outbound call (the client layer),
exported by a batching processor so that tracing stays off the request path.

Without :func:`setup_tracing` the OpenTelemetry API is a no-op and costs little.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.resilience.handlers import Stream, Unary, method_of, wrap

_tracer = trace.get_tracer("livemesh.resilience")


def setup_tracing(service: str, exporter: SpanExporter) -> TracerProvider:
    """Install a tracer provider for ``service`` exporting through a batching processor."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def inject(metadata: list[tuple[str, str]]) -> None:
    """Append the current trace context (W3C ``traceparent``/``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metadata.extend(carrier.items())


@contextlib.contextmanager
def client_span(method: str, dependency: str) -> Iterator[trace.Span]:
    with _tracer.start_as_current_span(
        method.lstrip("/"), kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.method": method, "peer.service": dependency},
    ) as span:
        yield span


def record_status(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per call, child of the caller's span named in the metadata."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = method_of(handler_call_details)
        carrier = {k: v for k, v in handler_call_details.invocation_metadata or ()
                   if isinstance(v, str)}
        attributes = {"rpc.system": "grpc", "rpc.method": method}

        def unary(behaviour: Unary) -> Unary:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
                with _tracer.start_as_current_span(
                    method.lstrip("/"), context=propagate.extract(carrier),
                    kind=SpanKind.SERVER, attributes=attributes,
                ):
                    return await behaviour(request, ctx)

            return handle

        def stream(behaviour: Stream) -> Stream:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with _tracer.start_as_current_span(
                    method.lstrip("/"), context=propagate.extract(carrier),
                    kind=SpanKind.SERVER, attributes=attributes,
                ):
                    async for item in behaviour(request, ctx):
                        yield item

            return handle

        return wrap(handler, unary, stream)  # type: ignore[return-value]
