"""Metrics collection during a run: the nodes' own ``/metrics`` and the processes' CPU.

Once a second: the origin's responses (``livemesh_origin_responses_total``), every
edge and shield's requests and upstream fetches, and the CPU seconds of every stack
process (from /proc), so the report can plot requests reaching the origin over time
and the scale model can use measured per-core capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kernel.procfs import cpu_seconds
from loadrig.chaos import stack_processes


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of counter ``name`` in a Prometheus text page (pure)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


@dataclass
class Node:
    name: str
    kind: str  # origin, edge, shield
    url: str
    pid: int


def discover_nodes(root: int) -> list[Node]:
    nodes = []
    for proc in stack_processes(root):
        port = proc.option("--port")
        if port is None or proc.argv[0] not in ("origin", "edge"):
            continue
        kind = "origin" if proc.argv[0] == "origin" else (proc.option("--tier") or "edge")
        name = proc.option("--name") or proc.argv[0]
        nodes.append(Node(name, kind, f"http://127.0.0.1:{port}", proc.pid))
    return sorted(nodes, key=lambda n: (n.kind, n.name))


@dataclass
class Collector:
    root: int
    t0: float
    nodes: list[Node] = field(default_factory=list)
    # series: [t, value] per metric
    origin_requests: list[tuple[float, float]] = field(default_factory=list)
    node_requests: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    node_fetches: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # by name: the processes of one kind run as several workers (kernel/workers.py), counted
    # together
    pids: dict[str, list[int]] = field(default_factory=dict)

    def start(self) -> None:
        self.nodes = discover_nodes(self.root)
        for proc in stack_processes(self.root):
            name = (
                proc.option("--name") or "-".join(proc.argv[:2])
                if proc.argv[0] in ("edge", "channel")
                else proc.argv[0]
            )
            self.pids.setdefault(name, []).append(proc.pid)

    async def sample(self, http: aiohttp.ClientSession) -> None:
        t = round(time.time() - self.t0, 2)
        timeout = aiohttp.ClientTimeout(total=0.8)

        async def scrape(node: Node) -> None:
            try:
                async with http.get(f"{node.url}/metrics", timeout=timeout) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError):
                return  # a killed or paused node has no metrics: the gap shows in the plot
            if node.kind == "origin":
                self.origin_requests.append(
                    (t, metric_total(text, "livemesh_origin_responses_total"))
                )
            else:
                self.node_requests.setdefault(node.name, []).append(
                    (t, metric_total(text, "livemesh_edge_requests_total"))
                )
                self.node_fetches.setdefault(node.name, []).append(
                    (t, metric_total(text, "livemesh_edge_upstream_fetches_total"))
                )

        await asyncio.gather(*(scrape(n) for n in self.nodes))
        for name, pids in self.pids.items():
            self.cpu.setdefault(name, []).append((t, sum(cpu_seconds(pid) for pid in pids)))

    async def run(self, stop: asyncio.Event, period_s: float = 1.0) -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                await self.sample(http)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), period_s)
            await self.sample(http)

    def as_dict(self) -> dict[str, object]:
        return {
            "nodes": [n.__dict__ for n in self.nodes],
            "origin_requests": self.origin_requests,
            "node_requests": self.node_requests,
            "node_fetches": self.node_fetches,
            "cpu_seconds": self.cpu,
        }
