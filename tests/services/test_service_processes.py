"""Each service is its own process: ``livemesh <service> --port 0`` prints its address when
ready, answers health checks, and exits 0 on SIGTERM (what the stack launcher relies on)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.processes import parent_death_signal
from kernel.rpc.clients import RpcChannelFactory


async def launch(
    *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *parent_death_signal(),
        sys.executable,
        "-m",
        "command.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        line = (await process.stdout.readline()).decode().strip()
    name, _, address = line.partition(": ")
    assert name == args[0], line
    return process, address


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        return await process.wait()


async def test_registry_and_catalog_processes_serve_health_and_stop_on_sigterm(
    factory: RpcChannelFactory,
) -> None:
    registry, registry_addr = await launch("registry", "--port", "0")
    catalog, catalog_addr = await launch("catalog", "--port", "0")
    try:
        for address, service in (
            (registry_addr, "livemesh.registry.v1.RegistryService"),
            (catalog_addr, "livemesh.catalog.v1.CatalogService"),
        ):
            health = health_pb2_grpc.HealthStub(factory.channel(address))
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert await stop(registry) == 0
        assert await stop(catalog) == 0


async def test_gateway_process_prints_its_url_and_serves_openapi(redis_url: str) -> None:
    gateway, url = await launch("gateway", "--port", "0")
    try:
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(url + "/openapi.json") as resp:
            assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.")
    finally:
        assert await stop(gateway) == 0
