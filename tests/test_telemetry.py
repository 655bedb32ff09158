"""Where a process's spans go (kernel/rpc/telemetry.py): an OTLP endpoint first, else a
JSON-lines file per process in the trace directory, else nowhere."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kernel.config import ResilienceSettings
from kernel.rpc.telemetry import span_exporter


def test_without_an_endpoint_or_a_directory_there_is_no_exporter() -> None:
    assert span_exporter("playback", ResilienceSettings()) is None


def test_an_otlp_endpoint_wins_over_the_trace_directory(tmp_path: Path) -> None:
    settings = ResilienceSettings(otlp_endpoint="http://collector:4318/", trace_dir=str(tmp_path))
    exporter = span_exporter("playback", settings)
    assert isinstance(exporter, OTLPSpanExporter)
    assert not list(tmp_path.iterdir())


def test_the_trace_directory_gets_one_json_line_per_span(tmp_path: Path) -> None:
    exporter = span_exporter("playback", ResilienceSettings(trace_dir=str(tmp_path / "traces")))
    assert exporter is not None
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("press-play") as root, tracer.start_as_current_span("hop"):
        pass
    lines = (tmp_path / "traces" / "playback.jsonl").read_text().splitlines()
    spans = [json.loads(line) for line in lines]
    assert [span["name"] for span in spans] == ["hop", "press-play"]
    assert {span["context"]["trace_id"] for span in spans} == {
        f"0x{root.get_span_context().trace_id:032x}"
    }
