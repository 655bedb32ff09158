"""OpenTelemetry traces across hops: W3C ``traceparent`` in gRPC metadata, a span
per inbound call (server interceptor) and per outbound call (the client layer),
exported by a batching processor so that tracing stays off the request path.

Traces are sampled at the head: :func:`setup_tracing` installs
``ParentBased(TraceIdRatioBased(ratio))`` with the ratio from ``LIVEMESH_TRACE_SAMPLE``
(default 0.1). The first hop decides; every later hop follows the sampled flag of the
``traceparent`` it received, and the context is propagated whether sampled or not,
so a sampled trace is whole across hops. Within a trace that was not sampled no
span is made on any later hop (its context is passed on as received), so that the
90 % of calls that are not sampled cost next to nothing.

Without :func:`setup_tracing` the OpenTelemetry API is a no-op and costs little.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
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

from kernel.config import ResilienceSettings, load
from kernel.rpc.resilience.context import TRACEPARENT_KEY, TRACESTATE_KEY, Inbound
from kernel.rpc.resilience.handlers import Stage, StreamStep, UnaryStep

SAMPLE_ENV = "LIVEMESH_TRACE_SAMPLE"
DEFAULT_SAMPLE: float = ResilienceSettings.model_fields["trace_sample"].default

_tracer = trace.get_tracer("livemesh.resilience")


def sample_ratio() -> float:
    """The head sampling ratio: the ``trace_sample`` setting (``LIVEMESH_TRACE_SAMPLE``,
    clamped to 0..1), else 0.1."""
    return load(ResilienceSettings).settings.trace_sample


def sampler(ratio: float | None = None) -> Sampler:
    """Root spans sampled at ``ratio`` (default :func:`sample_ratio`); every other span
    follows its parent's decision, so a trace is kept or dropped whole."""
    return ParentBased(TraceIdRatioBased(sample_ratio() if ratio is None else ratio))


def setup_tracing(
    service: str, exporter: SpanExporter, ratio: float | None = None
) -> TracerProvider:
    """Install a tracer provider for ``service`` exporting through a batching processor,
    with the head sampler of :func:`sampler`."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), sampler=sampler(ratio)
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _tracer
    _tracer = provider.get_tracer("livemesh.resilience")
    return provider


def inject(metadata: list[tuple[str, str]], span: trace.Span | None = None) -> None:
    """Append the trace context of ``span`` (None: the current span) as W3C
    ``traceparent``/``tracestate``, sampled or not: the next hop follows the decision
    made here."""
    ctx = (trace.get_current_span() if span is None else span).get_span_context()
    if not ctx.is_valid:
        return
    metadata.append(
        (TRACEPARENT_KEY, f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}")
    )
    if ctx.trace_state:
        metadata.append((TRACESTATE_KEY, ctx.trace_state.to_header()))


_ROOT = Context()
# W3C trace-context level 1: version-traceid-spanid-flags (a later version may add fields)
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def extract(traceparent: str | None, tracestate: str | None = None) -> trace.Span | None:
    """The caller's span named by inbound ``traceparent``/``tracestate`` metadata, or
    None when it sent none or an invalid one."""
    if traceparent is None:
        return None
    match = _TRACEPARENT_RE.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    span_context = trace.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16)),
        trace_state=None if tracestate is None else trace.TraceState.from_header([tracestate]),
    )
    return trace.NonRecordingSpan(span_context) if span_context.is_valid else None


def _unsampled(span: trace.Span) -> bool:
    """A span of a trace that was not sampled (and does not record)."""
    ctx = span.get_span_context()
    return ctx.is_valid and not ctx.trace_flags.sampled and not span.is_recording()


def client_names(method: str, dependency: str) -> tuple[str, dict[str, str]]:
    """The name and attributes of the CLIENT spans of ``method`` (made once per method)."""
    return method.lstrip("/"), {
        "rpc.system": "grpc",
        "rpc.method": method,
        "peer.service": dependency,
    }


def start_client(name: str, attributes: dict[str, str]) -> trace.Span:
    """A CLIENT span, child of the current one; end it with :func:`end`.

    It is not made current: what runs inside it is the layer's own bookkeeping and
    the call, whose metadata carries it (:func:`inject`). Within a trace that was not
    sampled no span is made at all: the current one stands for it (what a
    parent-based sampler would decide, for a fraction of the cost), so an unsampled
    hop only passes the context on."""
    current = trace.get_current_span()
    if _unsampled(current):
        return current
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def end(span: trace.Span, error: BaseException | None = None) -> None:
    """End ``span``; ``error`` (what its body raised) is recorded as
    ``start_as_current_span`` would."""
    if error is not None and span.is_recording():
        span.record_exception(error)
        if getattr(span, "status", None) is None or span.status.is_unset:  # type: ignore[attr-defined]
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def record_status(span: trace.Span, code: grpc.StatusCode) -> None:
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


def http_server_span(method: str, route: str) -> AbstractContextManager[trace.Span]:
    """The SERVER span of an HTTP request (the gateway's), made current so that the calls
    it makes are its children: the root of a press-play's trace. Within an unsampled
    trace it does not record, and the calls under it make no span."""
    return _tracer.start_as_current_span(
        f"{method} {route}",
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    )


class TracingServerInterceptor(Stage):
    """A SERVER span per call, child of the caller's span named in the metadata, made
    current for the handler. A call whose trace was not sampled gets no span of its
    own: the caller's (not recording) is made current, so the context goes on."""

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        start = _server_start(method)

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            span, token = start(call)
            try:
                result = await inner(request, ctx, call)
            except BaseException as error:
                _server_end(span, token, error)
                raise
            _server_end(span, token)
            return result

        return handle

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        start = _server_start(method)

        async def handle(
            request: Any,
            ctx: grpc.aio.ServicerContext,
            call: Inbound,
        ) -> AsyncIterator[Any]:
            span, token = start(call)
            try:
                async for item in inner(request, ctx, call):
                    yield item
            except BaseException as error:
                _server_end(span, token, error)
                raise
            _server_end(span, token)

        return handle


def _server_start(method: str) -> Callable[[Inbound], tuple[trace.Span, object]]:
    """How a call of ``method`` starts its SERVER span and makes it current."""
    name, attributes = method.lstrip("/"), {"rpc.system": "grpc", "rpc.method": method}

    def start(call: Inbound) -> tuple[trace.Span, object]:
        parent = extract(call.traceparent, call.tracestate)
        if parent is not None and _unsampled(parent):
            span = parent
        else:
            span = _tracer.start_span(
                name,
                context=_ROOT if parent is None else trace.set_span_in_context(parent),
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
        return span, otel_context.attach(trace.set_span_in_context(span))

    return start


def _server_end(span: trace.Span, token: object, error: BaseException | None = None) -> None:
    """Undo the start: the span stops being current and ends."""
    otel_context.detach(token)  # type: ignore[arg-type]
    end(span, error)
