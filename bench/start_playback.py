"""StartPlayback through the gateway, with all its internal hops, against a bare grpc.aio
unary call measured in the same run (the baseline).

Processes: Redis (embedded), identity, catalog, channels, registry (with 20 edges in
4 regions), playback and the gateway, each its own process on loopback. One viewer
signs up; then ``POST /v1/playback:start`` for the live channel ``demo`` runs
(a) open loop at a fixed offered rate, by default the target's 1,000/s, and (b) closed
loop at saturation (where the servers' concurrency limits shed what would queue: those
429s are counted as errors, with their reasons). The baseline is a bare ``grpc.aio``
server's unary health Check at the same concurrency. Both run with every gRPC hop on mTLS
(a private CA, a certificate per process, as ``livemesh demo`` has it) and plaintext:
``--tls`` picks one, by default both, with the ratio of the two. Targets (DESIGN.md §7): >= 1,000
StartPlayback/s, p99 <= 25 ms on 2 cores; ``meets_target`` says whether the fixed-rate
phase served the offered 1,000/s within that p99 and without an error.

The database (identity's, catalog's and channels' records: embedded SQLite files, or
``--database-url``'s) sits behind read-through caches on the press-play path. ``--db``
runs the stack with them (``cached``, production), with them off (``every-call``:
``LIVEMESH_DB_READ_CACHE=off``, every press play reads the channel's record from the
database), or both, in the same run, with the ratio of the two.

The gateway and playback run ``--workers`` processes each on one port (default: one per
core, the services' own default), and the baseline as many bare servers on one port
(SO_REUSEPORT), its client spreading calls over as many connections as the services'
clients open to an instance (the least busy first, as theirs): the same number of
processes to spread over the same cores.

The machine may be shared, so wall figures move with the neighbours' load. Each phase
also reads every process's own CPU time (``/proc/<pid>/stat``, user+system; the bench
client from ``getrusage``) and reports CPU milliseconds per successful call per process
(and the servers' per attempt, refused calls included: ``cpu_ms_per_attempt_servers``),
and ``cpu_bound_per_s``: the calls/s two whole cores would sustain at that cost (the
server processes alone, and with the load-generating client on the same cores).

    python bench/start_playback.py [--quick] [--rate 1000] [--concurrency 32] [--tls on]
        [--db cached|every-call|both] [--database-url postgresql+asyncpg://...] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import sys
import time
from collections import Counter
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from kernel.db import READ_CACHE_ENV  # noqa: E402
from kernel.procfs import cpu_seconds, descendants  # noqa: E402
from kernel.redis_server import EmbeddedRedis, redis_client  # noqa: E402
from kernel.rpc import credentials  # noqa: E402
from kernel.rpc.auth import bearer_metadata  # noqa: E402
from kernel.rpc.clients import RpcChannelFactory  # noqa: E402
from kernel.rpc.resilience.balancer import CONNECTIONS  # noqa: E402
from kernel.rpc.tls import PrivateCA  # noqa: E402
from kernel.stats import percentile  # noqa: E402
from kernel.supervise import TOKEN_KEYS_ENV  # noqa: E402
from kernel.tokens import new_keys  # noqa: E402
from livemesh.registry.v1 import registry_pb2 as rpb  # noqa: E402
from livemesh.registry.v1 import registry_pb2_grpc as rpb_grpc  # noqa: E402

# argv: the port (0: any) and whether it is shared with other processes (SO_REUSEPORT)
BARE_SERVER = """
import asyncio, grpc, sys
from grpc_health.v1 import health, health_pb2_grpc
from kernel.rpc.server import listen
from kernel.rpc.tls import tls_settings
async def main():
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(sys.argv[2]))])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = listen(server, f"127.0.0.1:{sys.argv[1]}", tls_settings())  # mTLS, when on
    await server.start()
    print(f"bare: 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""
TARGET_PER_S = 1000
TARGET_P99_MS = 25.0


def failure(status: int, body: bytes) -> str:
    """What a failed press play says, without its request id and numbers (so failures of
    one kind add up: "queued 27 ms" and "queued 31 ms" are one reason)."""
    try:
        error = json.loads(body)["error"]
        return f"{status} {error['status']}: " + re.sub(r"\d+", "N", error["message"][:80])
    except (ValueError, KeyError, TypeError):
        return f"{status} {body[:80]!r}"


def meets_target(fixed: dict[str, Any]) -> bool:
    """The offered target rate served (within 1 %: the open loop's last second is partial)
    at the target p99, with no call failed or shed."""
    return (
        fixed["offered_per_s"] >= TARGET_PER_S
        and fixed["per_s"] >= 0.99 * TARGET_PER_S
        and fixed["p99_ms"] <= TARGET_P99_MS
        and fixed["errors"] == 0
    )


def figures(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    return {
        "calls": len(latencies),
        "errors": errors,
        "per_s": round(len(latencies) / seconds),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


CORES = 2


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU time of named processes over one phase (``"client"``: this process)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        now = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        now["client"] = own_cpu_s()
        return now

    def per_call_ms(self, calls: int, attempts: int) -> dict[str, Any]:
        """CPU per successful call, and the servers' per attempt (refused ones too: a phase
        that sheds more divides the same work among fewer successes)."""
        end = self._now()
        used = {name: (end[name] - self.start[name]) * 1000 for name in end}
        per = {name: round(ms / max(1, calls), 3) for name, ms in used.items()}
        servers = sum(v for k, v in per.items() if k != "client")
        servers_used = sum(ms for name, ms in used.items() if name != "client")
        return {
            "cpu_ms_per_call": per,
            "cpu_ms_per_call_servers": round(servers, 3),
            "cpu_ms_per_attempt_servers": round(servers_used / max(1, attempts), 3),
            "cpu_bound_per_s": {
                "servers": round(CORES * 1000 / servers) if servers else None,
                "with_client": round(CORES * 1000 / (servers + per["client"])),
            },
        }


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants (a kind's workers are its leader's children)."""
    return sum(cpu_seconds(each) for each in (pid, *descendants(pid)))


async def redis_pid(url: str) -> int:
    client = redis_client(url)
    try:
        return int((await client.info("server"))["process_id"])
    finally:
        await client.aclose()


class Stack:
    def __init__(self, ca: PrivateCA | None) -> None:
        self.ca = ca  # each process gets its own certificate from it (None: plaintext)
        self.procs: list[asyncio.subprocess.Process] = []
        self.pids: dict[str, int] = {}

    async def launch(self, *args: str, env: dict[str, str], port: int = 0) -> str:
        """Start a process, ``args[0]`` its kind (``bare``: the baseline's server, ``args[1]``
        whether it shares its port); its address once it says it is ready."""
        cmd = (
            [sys.executable, "-c", BARE_SERVER, str(port), args[1]]
            if args[0] == "bare"
            else [sys.executable, "-m", "command.cli", *args, "--port", str(port)]
        )
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **env, **self.tls_env(args[0]), "LIVEMESH_LOG_LEVEL": "WARNING"},
        )
        self.procs.append(proc)
        self.pids[args[0] if args[0] not in self.pids else f"{args[0]}-{proc.pid}"] = proc.pid
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().strip()
        if not line.startswith(f"{args[0]}: "):
            raise SystemExit(f"{args[0]} did not start: {line!r}")
        return line.split(": ", 1)[1]

    async def launch_bare(self, workers: int, env: dict[str, str]) -> str:
        """The baseline: ``workers`` bare servers on one port, as many as each kind under
        test runs (the same number of processes to spread over the cores)."""
        shared = str(int(workers > 1))
        address = await self.launch("bare", shared, env=env)
        port = int(address.rsplit(":", 1)[1])
        for _ in range(workers - 1):
            await self.launch("bare", shared, env=env, port=port)
        return address

    def tls_env(self, name: str) -> dict[str, str]:
        return self.ca.issue(name).env() if self.ca else {}

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()


async def open_loop(call: Any, rate: float, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    meter = CpuMeter(pids)
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            await call()
            latencies.append(time.perf_counter() - t0)
        except Exception:
            errors += 1

    tasks = []
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(one()))
        n += 1
    await asyncio.gather(*tasks)
    result = figures(latencies, errors, seconds)
    result["offered_per_s"] = rate
    result.update(meter.per_call_ms(len(latencies), len(latencies) + errors))
    return result


async def closed_loop(
    call: Any, concurrency: int, seconds: float, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    meter = CpuMeter(pids or {})
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call()
                latencies.append(time.perf_counter() - t0)
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = figures(latencies, errors, seconds)
    result["concurrency"] = concurrency
    if pids is not None:
        result.update(meter.per_call_ms(len(latencies), len(latencies) + errors))
    return result


async def run(args: argparse.Namespace, ca: PrivateCA | None, db: str) -> dict[str, Any]:
    seconds = 3.0 if args.quick else 10.0
    stack = Stack(ca)
    # this process's channels: plain ones from the factory (no interceptor on the baseline's)
    client = RpcChannelFactory(tls=ca.issue("bench") if ca else None)
    with EmbeddedRedis() as redis:
        env = {"REDIS_URL": redis.url, TOKEN_KEYS_ENV: new_keys()}  # playback signs URLs
        if db == "every-call":
            env[READ_CACHE_ENV] = "off"
        if args.database_url:
            env["LIVEMESH_DATABASE_URL"] = args.database_url
        # the edges are registered by hand, by an operator
        operator = bearer_metadata(credentials.operator_for_this_run(env, "bench"))
        try:
            for service in ("registry", "identity", "catalog", "channels"):
                env[f"LIVEMESH_{service.upper()}_TARGET"] = await stack.launch(service, env=env)
            workers = ("--workers", str(args.workers))
            env["LIVEMESH_PLAYBACK_TARGET"] = await stack.launch("playback", *workers, env=env)
            gateway = await stack.launch(
                "gateway", "--rate", "1e9", "--burst", "1e9", *workers, env=env
            )
            bare = await stack.launch_bare(args.workers, env=env)
            baseline_pids = {n: pid for n, pid in stack.pids.items() if n.startswith("bare")}
            pids = {n: pid for n, pid in stack.pids.items() if n not in baseline_pids}
            pids["redis"] = await redis_pid(redis.url)

            async with client.connect(env["LIVEMESH_REGISTRY_TARGET"]) as channel:
                registry = rpb_grpc.RegistryServiceStub(channel)
                for i in range(20):
                    await registry.RegisterInstance(
                        rpb.RegisterInstanceRequest(
                            instance=rpb.Instance(
                                instance_id=f"edge-{i}",
                                service="edge",
                                address=f"http://10.0.{i}.1:8080",
                                region=f"r{i % 4}-x",
                                load=(i * 7 % 10) / 10,
                                heartbeat_interval_seconds=3600,
                                content=["demo"] if i % 2 else [],
                            )
                        ),
                        timeout=5,
                        metadata=operator,
                    )

            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.post(
                    gateway + "/v1/accounts:signUp",
                    json={
                        "email": "bench@example.org",
                        "password": "correct horse battery",
                        "displayName": "Bench",
                    },
                ) as resp:
                    token = (await resp.json())["accessToken"]
                headers = {"Authorization": f"Bearer {token}"}
                reasons: Counter[str] = Counter()
                body = json.dumps({"content": "channels/demo", "clientRegion": "r1-x"})

                async def press_play() -> None:
                    async with http.post(
                        gateway + "/v1/playback:start", data=body, headers=headers
                    ) as resp:
                        text = await resp.read()
                        if resp.status != 200:
                            reasons[failure(resp.status, text)] += 1
                            raise RuntimeError(resp.status)

                await closed_loop(press_play, 8, 1.0)  # warm-up
                reasons.clear()
                fixed = await open_loop(press_play, args.rate, seconds, pids)
                fixed["error_reasons"] = dict(reasons.most_common(5))
                reasons.clear()
                saturated = await closed_loop(press_play, args.concurrency, seconds, pids)
                saturated["error_reasons"] = dict(reasons.most_common(5))

            # as many connections as the services' clients open to an instance, each call
            # on the one with the fewest in flight (as theirs): each bare process serves
            # what its connections bring, as the workers under test do
            channels = [client.connect(bare) for _ in range(CONNECTIONS)]
            checks = [health_pb2_grpc.HealthStub(c).Check for c in channels]
            in_flight = [0] * len(checks)
            request = health_pb2.HealthCheckRequest()

            async def echo() -> None:
                i = min(range(len(checks)), key=in_flight.__getitem__)
                in_flight[i] += 1
                try:
                    await checks[i](request, timeout=5)
                finally:
                    in_flight[i] -= 1

            await closed_loop(echo, 8, 1.0)
            baseline = await closed_loop(echo, args.concurrency, seconds, baseline_pids)
            for channel in channels:
                await channel.close()
        finally:
            await stack.stop()
    return {
        "start_playback_fixed_rate": fixed,
        "start_playback_saturation": saturated,
        "baseline_bare_grpc_unary": baseline,
        "ratio_throughput_vs_baseline": round(saturated["per_s"] / max(1, baseline["per_s"]), 3),
        "ratio_cpu_per_call_vs_baseline": round(
            saturated["cpu_ms_per_call_servers"] / baseline["cpu_ms_per_call_servers"], 2
        ),
        "targets": {"per_s": TARGET_PER_S, "p99_ms": TARGET_P99_MS},
        "meets_target": meets_target(fixed),
        "workers": args.workers,
    }


def ratios(run: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """``run``'s saturated throughput and fixed-rate p99 over ``base``'s."""
    sat, fixed = "start_playback_saturation", "start_playback_fixed_rate"
    return {
        "saturation_per_s": round(run[sat]["per_s"] / max(1, base[sat]["per_s"]), 3),
        "fixed_rate_p99": round(run[fixed]["p99_ms"] / base[fixed]["p99_ms"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per phase instead of 10 s")
    parser.add_argument(
        "--rate",
        type=float,
        default=float(TARGET_PER_S),
        help="offered StartPlayback/s in the fixed-rate phase",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="processes of the gateway and of playback, and of the baseline's server "
        "(default: one per core, the services' own default)",
    )
    parser.add_argument(
        "--tls", choices=("off", "on", "both"), default="both", help="mTLS on every gRPC hop"
    )
    parser.add_argument(
        "--db",
        choices=("cached", "every-call", "both"),
        default="both",
        help="the database's records read through the caches, or on every press play",
    )
    parser.add_argument(
        "--database-url", help="the services' database (default: an embedded SQLite each)"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "start_playback", "load_avg_1m_start": os.getloadavg()[0]}
    dbs = ("cached", "every-call") if args.db == "both" else (args.db,)
    for mode in ("off", "on") if args.tls == "both" else (args.tls,):
        for db in dbs:
            with closing(PrivateCA()) if mode == "on" else nullcontext() as ca:
                key = f"tls_{mode}" if db == "cached" else f"tls_{mode}_db_every_call"
                result[key] = asyncio.run(run(args, ca, db))
        if args.db == "both":
            result[f"ratio_db_every_call_vs_cached_tls_{mode}"] = ratios(
                result[f"tls_{mode}_db_every_call"], result[f"tls_{mode}"]
            )
    if args.tls == "both" and "cached" in dbs:
        result["ratio_tls_on_vs_off"] = ratios(result["tls_on"], result["tls_off"])
    result["load_avg_1m_end"] = os.getloadavg()[0]
    for key, value in result.items():
        print(f"{key}: {value}")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
