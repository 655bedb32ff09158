"""Where a control-plane process's telemetry goes: its metrics to a Prometheus
``/metrics`` listener, its spans to an OTLP collector or to a JSON-lines file.

Spans go by OTLP/HTTP to ``otlp_endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``, the
OpenTelemetry name: a base URL, spans are posted to ``/v1/traces``) when one is set; else,
with ``trace_dir`` (``LIVEMESH_TRACE_DIR``), one span per line into
``{trace_dir}/{process}.jsonl``, so that the demo leaves traces a person can read without
running a collector; else nowhere, and the OpenTelemetry API stays a no-op. Sampling is the
resilience layer's (``trace_sample``): an unsampled call makes no span either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from prometheus_client import start_http_server

from kernel.config import ResilienceSettings
from kernel.rpc.resilience.metrics import exposed
from kernel.rpc.resilience.tracing import setup_tracing

log = logging.getLogger(__name__)

OTLP_TRACES_PATH = "/v1/traces"


def _json_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + "\n"


def span_exporter(process: str, settings: ResilienceSettings) -> SpanExporter | None:
    """The exporter ``settings`` name for ``process``'s spans, or None: no tracing."""
    if settings.otlp_endpoint:
        return OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + OTLP_TRACES_PATH)
    if settings.trace_dir:
        path = Path(settings.trace_dir) / f"{process}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        # line-buffered: each span is on disk once exported, readable while the process runs
        out = path.open("a", buffering=1, encoding="utf-8")
        return ConsoleSpanExporter(service_name=process, out=out, formatter=_json_line)
    return None


def start_tracing(process: str, settings: ResilienceSettings) -> TracerProvider | None:
    """Install the tracer provider of ``process`` when ``settings`` name somewhere for its
    spans; shut the provider down at exit so that the last batch is sent."""
    exporter = span_exporter(process, settings)
    if exporter is None:
        return None
    log.info("%s: spans to %s", process, settings.otlp_endpoint or settings.trace_dir)
    return setup_tracing(process, exporter)


def start_metrics(host: str, port: int) -> Callable[[], None] | None:
    """Serve the resilience layer's registry (client and server metrics) as Prometheus
    text on ``http://host:port/metrics`` (prometheus_client's listener, in a thread of its
    own, so a scrape never waits for the event loop); port 0: none. Returns the stop."""
    if port == 0:
        return None
    server, thread = start_http_server(port, host, registry=exposed())
    log.info("metrics: http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
