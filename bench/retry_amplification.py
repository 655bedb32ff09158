"""Retry amplification with a dependency fully down (every call UNAVAILABLE).

Measures attempts per call reaching the server through the resilience layer, and,
as the baseline in the same run, through a naive client: grpc's own service-config
retries (5 attempts, no budget). Target: the layer ≤ 1.1x.

    python bench/retry_amplification.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.resilience.faults import FaultInjector, FaultRule
from kernel.rpc.server import start_server
from livemesh.registry.v1 import registry_pb2 as pb
from livemesh.registry.v1 import registry_pb2_grpc as pb_grpc
from services.registry.service import RegistryService

LIST = "/livemesh.registry.v1.RegistryService/ListInstances"
NAIVE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.001s",
                "maxBackoff": "0.01s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


class Counter(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.count = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if details.method == LIST:
            self.count += 1
        return await continuation(details)


async def run(calls: int, concurrency: int, stub: Any) -> int:
    failed = 0
    queue = list(range(calls))

    async def worker() -> None:
        nonlocal failed
        while queue:
            queue.pop()
            try:
                await stub.ListInstances(pb.ListInstancesRequest(), timeout=1.0)
            except grpc.aio.AioRpcError:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def main(quick: bool) -> dict[str, Any]:
    calls = 500 if quick else 5000
    counter = Counter()
    service = RegistryService()
    await service.start()
    down = FaultInjector([FaultRule("*", error="UNAVAILABLE", error_rate=1.0)])
    running = await start_server(service.specs(), interceptors=[counter, down])
    figures: dict[str, Any] = {"calls": calls}
    for name, factory in (
        ("naive", RpcChannelFactory(layer=None, service_config=NAIVE_CONFIG)),
        ("layer", RpcChannelFactory()),
    ):
        counter.count = 0
        failed = await run(calls, 20, factory.stub(pb_grpc.RegistryServiceStub, running.target))
        figures[f"{name}_attempts_per_call"] = round(counter.count / calls, 3)
        figures[f"{name}_failed"] = failed
        print(
            f"{name:>6}: {calls} calls, {failed} failed, {counter.count} attempts at the "
            f"server = {counter.count / calls:.3f} per call"
        )
        await factory.close()
    await running.server.stop(0)
    await service.close()
    figures["ratio_naive_over_layer"] = round(
        figures["naive_attempts_per_call"] / figures["layer_attempts_per_call"], 2
    )
    figures["target"] = 1.1
    figures["ok"] = figures["layer_attempts_per_call"] <= 1.1
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = asyncio.run(main(parser.parse_args().quick))
    print("RESULT " + json.dumps(result))
