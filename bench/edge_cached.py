"""Benchmark: cached-object requests/s of one edge node vs nginx ``proxy_cache``.

Both caches sit in front of the same small origin (a process of this file, serving a
796-byte and a 64 KiB object marked ``immutable``), are filled with each object first,
then loaded by the same load generator, ``wrk`` (one thread, keep-alive connections).
Fairness: one edge process vs one nginx worker (``worker_processes 1``), each pinned to
CPU 0 with ``taskset``; wrk is pinned to CPU 1; nginx logs no access lines (the edge logs
none either) and keeps connections open as long as the edge does.  Rounds alternate
edge / nginx, and the median round per server is reported, so a noisy neighbour hurts
both alike.  Besides req/s, each round reads the server's own CPU time (``/proc``; nginx:
master + worker) and reports requests per CPU-second, the per-core figure that holds
steady when other work shares the cores.

Target (DESIGN.md §7): edge req/s ≥ 1.0 x nginx on the same cores.
Needs Debian's ``nginx`` (or ``nginx-light``) and ``wrk``: ``make bench-deps``
(installed by this bench when missing and it runs as root).
Run: ``python bench/edge_cached.py [--quick] [--connections N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from _harness import Procs, free_port, loadavg, pinned, print_result, ratio, wait_ready

from kernel import procfs

OBJECTS = {"small": 796, "large": 64 << 10}
SERVER_CPUS = "0"
LOAD_CPUS = "1"

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:16m max_size=1g
                     inactive=60m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{origin};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_valid 200 60m;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


# -- the origin (a child process: ``edge_cached.py --serve-origin PORT``) -----------------


def serve_origin(port: int) -> None:
    from aiohttp import web

    pattern = bytes(range(256))
    bodies = {name: (pattern * (size // 256 + 1))[:size] for name, size in OBJECTS.items()}

    async def obj(request: web.Request) -> web.Response:
        body = bodies.get(request.match_info["name"].removesuffix(".bin"))
        if body is None:
            raise web.HTTPNotFound()
        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/vod/bench/{name}", obj)
    app.router.add_get("/healthz", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- set-up ---------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {missing}: run `make bench-deps` (apt-get install nginx wrk)")
    print(f"installing {missing} from Debian's packages ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    packages = ["nginx-light" if t == "nginx" else t for t in missing]
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def fetch(url: str) -> tuple[int, dict[str, str], int]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
        return response.status, dict(response.headers), len(body)


def warm(base: str, cache_header: str) -> None:
    """Fill each object, then check it is served from the cache with the right size."""
    for name, size in OBJECTS.items():
        url = f"{base}/vod/bench/{name}.bin"
        fetch(url)
        status, headers, length = fetch(url)
        if status != 200 or length != size or headers.get(cache_header) != "HIT":
            raise SystemExit(f"{url}: not a cached hit ({status}, {length} B, {headers})")


# -- load -----------------------------------------------------------------------------------

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def cpu_times(root: int) -> dict[int, float]:
    """User + system CPU seconds of ``root`` and each of its child processes, from /proc
    (a child already gone, e.g. nginx's cache loader after its work, is left out)."""
    pids = [root, *procfs.children(root)]
    return {pid: procfs.cpu_seconds(pid) for pid in pids if procfs.alive(pid)}


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def run_wrk(url: str, connections: int, seconds: int, root: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    cpu0 = cpu_times(root)
    out = subprocess.run(
        pinned(command, LOAD_CPUS), capture_output=True, text=True, check=True
    ).stdout
    cpu = cpu_used(cpu0, cpu_times(root))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  wrk reported errors for {url}: {out.strip()}", file=sys.stderr)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "per_cpu_s": requests / max(cpu, 0.01)}


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The median round by req/s (its latencies with it), and the median req per CPU-second."""
    ordered = sorted(rounds, key=lambda r: r["rps"])
    mid = ordered[(len(ordered) - 1) // 2]
    return {
        "rps": round(mid["rps"]),
        "p50_ms": round(mid["p50_ms"], 3),
        "p99_ms": round(mid["p99_ms"], 3),
        "per_cpu_s": round(statistics.median(r["per_cpu_s"] for r in rounds)),
        "rps_all": [round(r["rps"]) for r in rounds],  # type: ignore[dict-item]
        "per_cpu_s_all": [round(r["per_cpu_s"]) for r in rounds],  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s instead of 4 of 5 s")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--serve-origin", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_origin is not None:
        serve_origin(args.serve_origin)
        return
    seconds = args.seconds or (3 if args.quick else 5)
    rounds = args.rounds or (2 if args.quick else 4)
    ensure_tools()
    print(f"load average at start: {loadavg()}")
    with Procs() as procs, tempfile.TemporaryDirectory(prefix="lm-nginx-") as tmp:
        os.chmod(tmp, 0o755)
        origin_port = free_port()
        origin = f"http://127.0.0.1:{origin_port}"
        procs.start(
            "origin",
            [sys.executable, str(Path(__file__).resolve()), "--serve-origin", str(origin_port)],
            cpus=LOAD_CPUS,
            ready=f"{origin}/healthz",
        )
        edge = procs.edge("edge-bench", "edge", [origin], tokens=False, cpus=SERVER_CPUS)
        edge_pid = procs.children[-1][1].pid
        nginx_port = free_port()
        conf = Path(tmp) / "nginx.conf"
        user = "user root root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port, origin=origin_port, user=user))
        nginx = f"http://127.0.0.1:{nginx_port}"
        master = procs.start("nginx", ["nginx", "-p", tmp, "-c", str(conf)], cpus=SERVER_CPUS)
        if not wait_ready(f"{nginx}/vod/bench/small.bin", threading.Event(), 10):
            raise SystemExit(f"nginx did not start: {(Path(tmp) / 'error.log').read_text()}")
        warm(edge, "X-Cache")
        warm(nginx, "X-Cache")
        servers = {"edge": edge, "nginx": nginx}
        pids = {"edge": edge_pid, "nginx": master.pid}
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for name in OBJECTS:
            runs: dict[str, list[dict[str, float]]] = {"edge": [], "nginx": []}
            for r in range(rounds):
                order = ["edge", "nginx"] if r % 2 == 0 else ["nginx", "edge"]
                for server in order:
                    url = f"{servers[server]}/vod/bench/{name}.bin"
                    runs[server].append(run_wrk(url, args.connections, seconds, pids[server]))
                    procs.check_alive()
            figures[name] = {server: median_round(runs[server]) for server in runs}
    print(f"load average at end: {loadavg()}")
    print(
        f"wrk -t1 -c{args.connections} -d{seconds}s x {rounds} rounds, servers on CPU "
        f"{SERVER_CPUS}, wrk on CPU {LOAD_CPUS}; median round per server"
    )
    result: dict[str, object] = {}
    for name, size in OBJECTS.items():
        e, n = figures[name]["edge"], figures[name]["nginx"]
        for label, f in (("edge ", e), ("nginx", n)):
            print(
                f"{name:5} {size:>6} B  {label} {f['rps']:>7} req/s  {f['per_cpu_s']:>7} req per "
                f"CPU-s  p50 {f['p50_ms']} ms  p99 {f['p99_ms']} ms   rounds {f['rps_all']} / "
                f"{f['per_cpu_s_all']}" + ("  (baseline)" if label == "nginx" else "")
            )
        rps_ratio = ratio(e["rps"], n["rps"])
        cpu_ratio = ratio(e["per_cpu_s"], n["per_cpu_s"])
        print(
            f"{'':15}ratio edge/nginx: {rps_ratio} req/s, {cpu_ratio} req per CPU-second "
            "(target ≥ 1.0)"
        )
        for key, value in (
            ("edge_rps", e["rps"]),
            ("nginx_rps", n["rps"]),
            ("ratio", rps_ratio),
            ("edge_per_cpu_s", e["per_cpu_s"]),
            ("nginx_per_cpu_s", n["per_cpu_s"]),
            ("per_cpu_ratio", cpu_ratio),
            ("edge_p50_ms", e["p50_ms"]),
            ("edge_p99_ms", e["p99_ms"]),
            ("nginx_p50_ms", n["p50_ms"]),
            ("nginx_p99_ms", n["p99_ms"]),
        ):
            result[f"{name}_{key}"] = value
    result["connections"] = args.connections
    result["seconds"] = seconds
    result["rounds"] = rounds
    print_result(result)


if __name__ == "__main__":
    main()
