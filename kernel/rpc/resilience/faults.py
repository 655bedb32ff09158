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
import random
import signal
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from kernel.config import ResilienceSettings, load
from kernel.processes import Target, is_running, kill, pid_of
from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Stage, StreamStep, UnaryStep
from kernel.watched_file import WatchedFile, write_json

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
        self,
        rules: Iterable[FaultRule] = (),
        rng: random.Random | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__()
        self.rules: list[FaultRule] = list(rules)
        self.rng = rng or random.Random()
        # None: the faults_file setting (LIVEMESH_FAULTS_FILE), looked up at first use so
        # that the module-level FAULTS reads no setting at import
        self.path = path
        self._file: WatchedFile[list[FaultRule]] | None = None
        self._seen: list[FaultRule] | None = None  # the file's rules last taken

    def set(self, *rules: FaultRule) -> None:
        """Replace the rules (no rules: no faults)."""
        self.rules = list(rules)

    def clear(self) -> None:
        self.rules = []

    def _reload(self) -> None:
        """Take the file's rules when it changed (they replace any set in-process)."""
        if self._file is None:
            if self.path is None:
                self.path = load(ResilienceSettings).settings.faults_file or ""
            if not self.path:
                return
            self._file = WatchedFile(self.path, _read_rules, [])
            self._seen = self._file.value
        rules = self._file.current()
        if rules is not self._seen:
            self._seen = self.rules = rules

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

        async def handle(
            request: Any,
            ctx: grpc.aio.ServicerContext,
            call: Inbound,
        ) -> AsyncIterator[Any]:
            rule = rule_for(method)
            if rule is not None:
                await apply(rule, ctx)
            async for item in inner(request, ctx, call):
                yield item

        return handle


def write_rules(path: str, rules: Iterable[FaultRule]) -> None:
    """Set the faults of every process that watches ``path`` (atomically replaced)."""
    write_json(path, [asdict(rule) for rule in rules])


def _read_rules(path: str) -> list[FaultRule]:
    with open(path) as file:
        return [FaultRule(**item) for item in json.load(file)]


# the one injector of this process; the server scaffold mounts it
FAULTS = FaultInjector()


class ProcessKiller:
    """Kills processes of the local stack by service name (SIGKILL by default: a crash,
    not a graceful stop). Works with ``subprocess.Popen`` objects or bare pids."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.processes: dict[str, list[Target]] = {}

    def add(self, service: str, process: Target) -> None:
        self.processes.setdefault(service, []).append(process)

    def kill_one(self, service: str, sig: int = signal.SIGKILL) -> int | None:
        """Kill one live process of ``service`` chosen at random; its pid, or None."""
        alive = [p for p in self.processes.get(service, []) if is_running(p)]
        if not alive:
            return None
        victim = self.rng.choice(alive)
        kill(victim, sig)
        return pid_of(victim)

    def kill_any(self, sig: int = signal.SIGKILL) -> tuple[str, int] | None:
        """Kill one live process of any service."""
        services = [s for s, ps in self.processes.items() if any(is_running(p) for p in ps)]
        if not services:
            return None
        service = self.rng.choice(services)
        pid = self.kill_one(service, sig)
        return None if pid is None else (service, pid)
