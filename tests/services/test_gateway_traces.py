"""A press-play leaves one trace: the gateway's request span is its root, the gateway's
call to playback its child, playback's server span the call's child, and playback's own
calls (registry, catalog, channels) below that, every span with the same trace id."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kernel.rpc.resilience import tracing
from tests.services.test_gateway import Stack, put_demo_on_air, stack  # noqa: F401

START = "livemesh.playback.v1.PlaybackService/StartPlayback"


async def signed_in(gateway: Stack) -> str:
    """A new viewer's access token."""
    account = {"email": "traced@example.org", "password": "correct horse battery"}
    status, _ = await gateway.call("POST", "/v1/accounts:signUp", {**account, "displayName": "T"})
    assert status == 200
    status, signed = await gateway.call("POST", "/v1/accounts:signIn", account)
    assert status == 200
    token: str = signed["accessToken"]
    return token


def child_of(parent: ReadableSpan, spans: list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span named ``name`` whose parent is ``parent``."""
    (found,) = [
        s
        for s in spans
        if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return found


async def test_a_press_play_is_one_trace_from_the_gateway_through_playback(
    stack: Stack,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = await signed_in(stack)
    await put_demo_on_air(stack.state)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler(1.0))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # as setup_tracing does
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("livemesh.resilience"))

    status, started = await stack.call(
        "POST", "/v1/playback:start", {"content": "titles/demo"}, token=token
    )
    assert status == 200, started
    assert provider.force_flush()
    spans = list(exporter.get_finished_spans())

    # (the edge's registration calls may land here too: each is a trace of its own)
    (root,) = [s for s in spans if s.parent is None and s.name == "POST /v1/playback:start"]
    assert root.kind is SpanKind.SERVER
    call = child_of(root, spans, START)
    assert call.kind is SpanKind.CLIENT
    served = child_of(call, spans, START)
    assert served.kind is SpanKind.SERVER
    lookups = [
        s
        for s in spans
        if s.parent is not None
        and s.parent.span_id == served.context.span_id
        and s.name.startswith("livemesh.registry.v1.RegistryService/")
    ]
    assert lookups, "playback's calls to the registry are children of its server span"
    answered = [child_of(lookup, spans, lookup.name) for lookup in lookups]
    assert all(s.kind is SpanKind.SERVER for s in answered)
    trace = [root, call, served, *lookups, *answered]
    assert {s.context.trace_id for s in trace} == {root.context.trace_id}
