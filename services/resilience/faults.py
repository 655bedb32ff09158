"""Fault injection (chaos): a server interceptor with rules changeable at run time,
and a killer of the local stack's processes.

Rules match a full method (``/pkg.Service/Method``), a service (``pkg.Service``)
or everything (``*``); the most specific rule wins. In-process they are set with
:meth:`FaultInjector.set`; a separate process reads them from the JSON file named
by ``LIVEMESH_FAULTS_FILE`` (a list of rule objects), re-read when it changes, so
a test or the load rig can change a running stack's faults.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from services.resilience.context import Inbound
from services.resilience.handlers import Stage, StreamStep, UnaryStep

FAULTS_FILE_ENV = "LIVEMESH_FAULTS_FILE"


@dataclass(frozen=True)
class FaultRule:
    match: str = "*"  # "/pkg.Service/Method", "pkg.Service" or "*"
    latency_s: float = 0.0
    latency_rate: float = 1.0  # share of matching calls delayed
    error: str = ""  # a grpc.StatusCode name, e.g. "UNAVAILABLE"
    error_rate: float = 0.0  # share of matching calls answered with ``error``

    def matches(self, method: str) -> int:
        """How specifically this rule matches ``method`` (0: not at all)."""
        if self.match == method:
            return 3
        if self.match == method.lstrip("/").split("/", 1)[0]:
            return 2
        return 1 if self.match == "*" else 0


class FaultInjector(Stage):
    def __init__(
        self, rules: Iterable[FaultRule] = (), rng: random.Random | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__()
        self.rules: list[FaultRule] = list(rules)
        self.rng = rng or random.Random()
        self.path = path if path is not None else os.environ.get(FAULTS_FILE_ENV)
        self._mtime: float | None = None

    def set(self, *rules: FaultRule) -> None:
        """Replace the rules (no rules: no faults)."""
        self.rules = list(rules)

    def clear(self) -> None:
        self.rules = []

    def _reload(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        if mtime is None:
            self.rules = []
            return
        with open(self.path) as file:
            self.rules = [FaultRule(**item) for item in json.load(file)]

    def rule_for(self, method: str) -> FaultRule | None:
        self._reload()
        best, score = None, 0
        for rule in self.rules:
            rank = rule.matches(method)
            if rank > score:
                best, score = rule, rank
        return best

    async def _apply(self, rule: FaultRule, ctx: grpc.aio.ServicerContext) -> None:
        if rule.latency_s > 0 and self.rng.random() < rule.latency_rate:
            await asyncio.sleep(rule.latency_s)
        if rule.error and self.rng.random() < rule.error_rate:
            await ctx.abort(grpc.StatusCode[rule.error], f"injected fault: {rule.error}")

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        rule_for, apply = self.rule_for, self._apply

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            rule = rule_for(method)  # per call: the rules change at run time
            if rule is not None:
                await apply(rule, ctx)
            return await inner(request, ctx, call)

        return handle

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        rule_for, apply = self.rule_for, self._apply

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound,
                         ) -> AsyncIterator[Any]:
            rule = rule_for(method)
            if rule is not None:
                await apply(rule, ctx)
            async for item in inner(request, ctx, call):
                yield item

        return handle


def write_rules(path: str, rules: Iterable[FaultRule]) -> None:
    """Set the faults of every process that watches ``path`` (atomically replaced)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as file:
        json.dump([asdict(rule) for rule in rules], file)
    os.replace(tmp, path)


# the one injector of this process; the server scaffold mounts it
FAULTS = FaultInjector()


class ProcessKiller:
    """Kills processes of the local stack by service name (SIGKILL by default: a crash,
    not a graceful stop). Works with ``subprocess.Popen`` objects or bare pids."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.processes: dict[str, list[subprocess.Popen[Any] | int]] = {}

    def add(self, service: str, process: subprocess.Popen[Any] | int) -> None:
        self.processes.setdefault(service, []).append(process)

    @staticmethod
    def _alive(process: subprocess.Popen[Any] | int) -> bool:
        if isinstance(process, int):
            try:
                os.kill(process, 0)
            except ProcessLookupError:
                return False
            return True
        return process.poll() is None

    def kill_one(self, service: str, sig: int = signal.SIGKILL) -> int | None:
        """Kill one live process of ``service`` chosen at random; its pid, or None."""
        alive = [p for p in self.processes.get(service, []) if self._alive(p)]
        if not alive:
            return None
        victim = self.rng.choice(alive)
        pid = victim if isinstance(victim, int) else victim.pid
        os.kill(pid, sig)
        if not isinstance(victim, int):
            victim.wait()
        return pid

    def kill_any(self, sig: int = signal.SIGKILL) -> tuple[str, int] | None:
        """Kill one live process of any service."""
        services = [s for s, ps in self.processes.items() if any(self._alive(p) for p in ps)]
        if not services:
            return None
        service = self.rng.choice(services)
        pid = self.kill_one(service, sig)
        return None if pid is None else (service, pid)
