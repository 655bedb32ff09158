"""A service process's telemetry: its Prometheus ``/metrics`` listener serves the server's
and the resilience layer's metrics, and its spans reach an OTLP/HTTP collector when one is
configured (a stub collector on loopback, the real exporter and process)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from kernel.ports import free_port
from kernel.rpc.clients import RpcChannelFactory
from tests.services.test_service_processes import launch, stop

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


async def check_health(factory: RpcChannelFactory, address: str, times: int) -> None:
    health = health_pb2_grpc.HealthStub(factory.channel(address))
    for _ in range(times):
        await health.Check(health_pb2.HealthCheckRequest())


async def test_a_service_process_serves_its_server_and_resilience_metrics(
    factory: RpcChannelFactory,
) -> None:
    port = free_port()
    registry, address = await launch("registry", "--port", "0", "--metrics-port", str(port))
    try:
        await check_health(factory, address, 3)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    finally:
        assert await stop(registry) == 0
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    ok = (("code", "OK"), ("method", HEALTH_CHECK))
    assert samples[("livemesh_rpc_served_total", ok)] == 3
    assert samples[("livemesh_rpc_served_seconds_count", (("method", HEALTH_CHECK),))] == 3
    assert samples[("livemesh_concurrency_limit", (("server", "server"),))] > 0  # the shedder's
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"livemesh_rpc_attempts", "livemesh_shed_calls", "livemesh_breaker_state"} <= names


async def test_a_service_process_exports_its_spans_to_the_configured_otlp_endpoint(
    factory: RpcChannelFactory,
) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    collector = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "LIVEMESH_TRACE_SAMPLE": "1"}
        registry, address = await launch("registry", "--port", "0", env=env)
        try:
            await check_health(factory, address, 2)
        finally:
            assert await stop(registry) == 0  # the last batch leaves at exit
    finally:
        await runner.cleanup()
    spans = [
        (resource.resource, span)
        for export in received
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    checks = [span for _, span in spans if span.name == HEALTH_CHECK.lstrip("/")]
    assert len(checks) == 2
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"registry"}
