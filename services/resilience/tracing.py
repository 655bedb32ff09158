"""OpenTelemetry traces across hops: W3C ``traceparent`` in gRPC metadata, a span
per inbound call (server interceptor) and per outbound call (the client layer),
exported by a batching processor so that tracing stays off the request path.

Traces are sampled at the head: :func:`setup_tracing` installs
``ParentBased(TraceIdRatioBased(ratio))`` with the ratio from ``LIVEMESH_TRACE_SAMPLE``
(default 0.1). The first hop decides; every later hop follows the sampled flag of the
``traceparent`` it received, and the context is propagated whether sampled or not,
so a sampled trace is whole across hops. An unsampled span builds no attributes.

Without :func:`setup_tracing` the OpenTelemetry API is a no-op and costs little.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.resilience.handlers import Stream, Unary, method_of, wrap

SAMPLE_ENV = "LIVEMESH_TRACE_SAMPLE"
DEFAULT_SAMPLE = 0.1

_tracer = trace.get_tracer("livemesh.resilience")
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"


def sample_ratio() -> float:
    """The head sampling ratio: ``LIVEMESH_TRACE_SAMPLE`` (0..1), else 0.1."""
    raw = os.environ.get(SAMPLE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_SAMPLE
    return min(1.0, max(0.0, float(raw)))


def sampler(ratio: float | None = None) -> Sampler:
    """Root spans sampled at ``ratio`` (default :func:`sample_ratio`); every other span
    follows its parent's decision, so a trace is kept or dropped whole."""
    return ParentBased(TraceIdRatioBased(sample_ratio() if ratio is None else ratio))


def setup_tracing(service: str, exporter: SpanExporter,
                  ratio: float | None = None) -> TracerProvider:
    """Install a tracer provider for ``service`` exporting through a batching processor,
    with the head sampler of :func:`sampler`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=sampler(ratio))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _tracer
    _tracer = provider.get_tracer("livemesh.resilience")
    return provider


def inject(metadata: list[tuple[str, str]]) -> None:
    """Append the current trace context (W3C ``traceparent``/``tracestate``), sampled or
    not: the next hop follows the decision made here."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return
    metadata.append((_TRACEPARENT,
                     f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"))
    if ctx.trace_state:
        metadata.append((_TRACESTATE, ctx.trace_state.to_header()))


_ROOT = Context()
# W3C trace-context level 1: version-traceid-spanid-flags (a later version may add fields)
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def extract(metadata: Any) -> Context:
    """The caller's trace context from inbound metadata (an empty context, so a root
    span, when it sent none or an invalid one)."""
    parent = tracestate = None
    for key, value in metadata or ():
        if key == _TRACEPARENT:
            parent = value
        elif key == _TRACESTATE:
            tracestate = value
    if not isinstance(parent, str):
        return _ROOT
    match = _TRACEPARENT_RE.fullmatch(parent)
    if match is None:
        return _ROOT
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return _ROOT
    span_context = trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16)),
        trace_state=(trace.TraceState.from_header([tracestate])
                     if isinstance(tracestate, str) else None),
    )
    if not span_context.is_valid:
        return _ROOT
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), _ROOT)


_client_attributes: dict[tuple[str, str], dict[str, str]] = {}


def start_client(method: str, dependency: str) -> tuple[trace.Span, object]:
    """A CLIENT span made current; end it with :func:`end`. (``start_as_current_span``
    does the same through two generator-based context managers, which cost more than an
    unsampled span itself.)"""
    attributes = _client_attributes.get((method, dependency))
    if attributes is None:
        attributes = {"rpc.system": "grpc", "rpc.method": method, "peer.service": dependency}
        _client_attributes[(method, dependency)] = attributes
    span = _tracer.start_span(method[1:] if method.startswith("/") else method,
                              kind=SpanKind.CLIENT, attributes=attributes)
    return span, otel_context.attach(trace.set_span_in_context(span))


def _start_server(name: str, parent: Context, attributes: dict[str, str],
                  ) -> tuple[trace.Span, object]:
    span = _tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                              attributes=attributes)
    return span, otel_context.attach(trace.set_span_in_context(span))


def end(span: trace.Span, token: object, error: BaseException | None = None) -> None:
    """Undo :func:`start_client`: the span stops being current and ends; ``error`` (what
    the body raised) is recorded as ``start_as_current_span`` would."""
    otel_context.detach(token)  # type: ignore[arg-type]
    if error is not None and span.is_recording():
        span.record_exception(error)
        if getattr(span, "status", None) is None or span.status.is_unset:  # type: ignore[attr-defined]
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


@contextlib.contextmanager
def client_span(method: str, dependency: str) -> Iterator[trace.Span]:
    span, token = start_client(method, dependency)
    try:
        yield span
    except BaseException as error:
        end(span, token, error)
        raise
    end(span, token)


def record_status(span: trace.Span, code: grpc.StatusCode) -> None:
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per call, child of the caller's span named in the metadata."""

    def __init__(self) -> None:
        self._attributes: dict[str, dict[str, str]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = method_of(handler_call_details)
        parent = extract(handler_call_details.invocation_metadata)
        attributes = self._attributes.get(method)
        if attributes is None:
            attributes = self._attributes[method] = {"rpc.system": "grpc", "rpc.method": method}
        name = method.lstrip("/")

        def unary(behaviour: Unary) -> Unary:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
                span, token = _start_server(name, parent, attributes)
                try:
                    result = await behaviour(request, ctx)
                except BaseException as error:
                    end(span, token, error)
                    raise
                end(span, token)
                return result

            return handle

        def stream(behaviour: Stream) -> Stream:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                span, token = _start_server(name, parent, attributes)
                try:
                    async for item in behaviour(request, ctx):
                        yield item
                except BaseException as error:
                    end(span, token, error)
                    raise
                end(span, token)

            return handle

        return wrap(handler, unary, stream)  # type: ignore[return-value]
