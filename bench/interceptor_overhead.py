"""Cost per call of the resilience layer: a bare ``grpc.aio`` unary call against the same
call through the whole stack (client layer + the server's resilience interceptors),
without and with OpenTelemetry tracing (batching processor, spans dropped by the
exporter; the layer's head sampler at ``LIVEMESH_TRACE_SAMPLE``, default 0.1, as
``setup_tracing`` installs it), all in the same run.

Client and server share one process and event loop, so a call's latency and CPU
hold both sides' work. The handler does nothing (``ListInstances`` answering an
empty list). Configurations are interleaved for ``--rounds`` rounds and each figure
is the median over rounds: latency p50/p99 with one caller, CPU per call (the
process's CPU time, gRPC's threads included) with one caller and with 8. The server's
limiter is set so that it never sheds (its bookkeeping still runs). Target: p50 with
the whole stack <= 1.5x bare.

    python bench/interceptor_overhead.py [--calls 2000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import loadavg, print_result

from kernel.rpc.resilience import server_interceptors, tracing
from kernel.rpc.resilience.client import ResilienceLayer
from kernel.rpc.resilience.limiter import AdaptiveLimiter, Gradient2, QueueWait
from kernel.stats import percentile
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc

REQUEST = pb.ListInstancesRequest()
REPLY = pb.ListInstancesResponse()
CONFIGS = ("bare", "layer", "layer_traced")


class Empty(pb_grpc.RegistryServiceServicer):
    async def ListInstances(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return REPLY


class Dropped(SpanExporter):
    """Counts the spans it is given and keeps none (the exporter's own cost is not ours)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def serve(interceptors: Sequence[grpc.aio.ServerInterceptor]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=list(interceptors))
    pb_grpc.add_RegistryServiceServicer_to_server(Empty(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def measure(stub: Any, calls: int) -> dict[str, float]:
    latencies = []
    cpu0 = time.process_time()
    for _ in range(calls):
        began = time.perf_counter()
        await stub.ListInstances(REQUEST, timeout=5)
        latencies.append(time.perf_counter() - began)
    cpu1 = time.process_time()

    async def caller(n: int) -> None:
        for _ in range(n):
            await stub.ListInstances(REQUEST, timeout=5)

    await asyncio.gather(*(caller(calls // 8) for _ in range(8)))
    cpu2 = time.process_time()
    return {
        "p50_us": percentile(latencies, 0.5) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
        "cpu_us_per_call": (cpu1 - cpu0) / calls * 1e6,
        "cpu_us_per_call_c8": (cpu2 - cpu1) / (calls // 8 * 8) * 1e6,
    }


async def run_config(name: str, calls: int, exporter: Dropped) -> dict[str, float]:
    provider = None
    if name == "layer_traced":
        provider = TracerProvider(sampler=tracing.sampler())
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracing._tracer = provider.get_tracer("livemesh.resilience")
    try:
        if name == "bare":
            server, target = await serve(())
            channel: Any = grpc.aio.insecure_channel(target)
        else:
            # the same interceptors, with a limiter that never sheds (its work is still done)
            limiter = AdaptiveLimiter(
                Gradient2(initial=10_000, max_limit=10_000), queue=QueueWait(min_wait_s=60.0)
            )
            server, target = await serve(server_interceptors(limiter))
            channel = ResilienceLayer().channel(target, grpc.aio.insecure_channel)
        stub = pb_grpc.RegistryServiceStub(channel)
        for _ in range(200):  # warm: connection, caches, the layer's latency tracker
            await stub.ListInstances(REQUEST, timeout=5)
        figures = await measure(stub, calls)
        await channel.close()
        await server.stop(0)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the batch into the exporter
            tracing._tracer = NoOpTracer()
    return figures


async def main(calls: int, rounds: int) -> dict[str, Any]:
    exporter = Dropped()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for round_ in range(rounds):
        for name in CONFIGS:
            figures = await run_config(name, calls, exporter)
            samples[name].append(figures)
            print(
                f"round {round_ + 1} {name:>12}: "
                + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()),
                flush=True,
            )
    result: dict[str, Any] = {
        "calls": calls,
        "rounds": rounds,
        "loadavg": loadavg(),
        "trace_sample": tracing.sample_ratio(),
    }
    for name in CONFIGS:
        result[name] = {
            key: round(statistics.median(s[key] for s in samples[name]), 1)
            for key in samples[name][0]
        }
    bare = result["bare"]
    for name in CONFIGS[1:]:
        result[f"{name}_over_bare"] = {key: round(result[name][key] / bare[key], 2) for key in bare}
        result[f"{name}_added_cpu_us_per_call"] = round(
            result[name]["cpu_us_per_call"] - bare["cpu_us_per_call"], 1
        )
    result["spans_exported"] = exporter.spans
    result["target_p50_ratio"] = 1.5
    result["ok"] = result["layer_traced_over_bare"]["p50_us"] <= 1.5
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 calls, 2 rounds")
    args = parser.parse_args()
    calls, rounds = (500, 2) if args.quick else (args.calls, args.rounds)
    print_result(asyncio.run(main(calls, rounds)))
