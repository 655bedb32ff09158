"""Chaos actions against a running stack: kill or pause a process by name, restart Redis,
inject gRPC faults.

The stack's processes are found below a root pid (the rig itself when it started the
stack, or a ``livemesh demo`` supervisor given with ``--attach``) from /proc: every
``python -m livemesh.cli <command> ...`` child is named by its ``--name`` (``edge-1``,
``shield-1``), its command (``origin``, ``gateway``, ``playback``), ``shield`` for the
shield tier and ``channel-<name>`` for a channel; ``redis`` names the redis-server.
The same command lines tell where each node listens (``--port``), which the metrics
collector uses.  gRPC faults go through the resilience layer's fault file
(``LIVEMESH_FAULTS_FILE``, re-read by every service when it changes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from livemesh.processes import parent_death_signal
from loadrig.profile import ChaosEvent
from services.resilience.faults import FaultRule, write_rules


@dataclass(frozen=True)
class StackProcess:
    pid: int
    argv: tuple[str, ...]  # the livemesh sub-command and its arguments (or redis-server's)
    names: frozenset[str]

    def option(self, flag: str) -> str | None:
        args = list(self.argv)
        return args[args.index(flag) + 1] if flag in args[:-1] else None


def names_of(argv: list[str]) -> frozenset[str]:
    """The names a chaos target may use for a process with this command line (pure)."""
    if argv and argv[0].endswith("redis-server"):
        return frozenset({"redis"})
    if not argv:
        return frozenset()
    names = {argv[0]}
    if "--name" in argv[:-1]:
        names.add(argv[argv.index("--name") + 1])
    if "--tier" in argv[:-1] and argv[argv.index("--tier") + 1] == "shield":
        names.add("shield")
    if argv[0] == "channel" and len(argv) > 1 and not argv[1].startswith("-"):
        names.add(f"channel-{argv[1]}")
    return frozenset(names)


def livemesh_argv(cmdline: list[str]) -> list[str] | None:
    """The sub-command argv of a ``-m livemesh.cli`` process, redis-server's argv, or None."""
    if "livemesh.cli" in cmdline:
        return cmdline[cmdline.index("livemesh.cli") + 1 :]
    if cmdline and Path(cmdline[0]).name.startswith("redis-server"):
        return ["redis-server", *cmdline[1:]]
    return None


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stack_processes(root: int) -> list[StackProcess]:
    """The livemesh processes (and redis-server) below ``root``."""
    out = []
    for pid in descendants(root):
        argv = livemesh_argv(_cmdline(pid))
        if argv is not None:
            out.append(StackProcess(pid, tuple(argv), names_of(argv)))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# a kill target that always hits viewers: the edge that has served most (CPU time), since
# press-play's ranking decides at run time which edge the players were given first
BUSIEST_EDGE = "busiest-edge"


@dataclass
class ChaosLog:
    at_s: float
    action: str
    target: str
    detail: str


@dataclass
class ChaosRunner:
    """Applies a profile's chaos events to the stack below ``root``."""

    root: int
    faults_file: str | None = None
    log: list[ChaosLog] = field(default_factory=list)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)  # restarted redis

    def find(self, name: str) -> list[StackProcess]:
        """The processes a target names; ``busiest-edge`` is the edge serving the most now."""
        processes = stack_processes(self.root)
        if name == BUSIEST_EDGE:
            edges = [p for p in processes if "edge" in p.names and "shield" not in p.names]
            return [max(edges, key=lambda p: cpu_seconds(p.pid))] if edges else []
        return [p for p in processes if name in p.names]

    def _note(self, t: float, event: ChaosEvent, detail: str) -> None:
        self.log.append(ChaosLog(round(t, 3), event.action, event.target or event.match, detail))

    def apply(self, event: ChaosEvent, t: float) -> None:
        """Start ``event`` (its end, for pause and timed faults, is :meth:`undo`)."""
        if event.action in ("kill", "pause"):
            victims = self.find(event.target)
            if not victims:
                self._note(t, event, "no such process")
                return
            sig = signal.SIGKILL if event.action == "kill" else signal.SIGSTOP
            for victim in victims:
                os.kill(victim.pid, sig)
            self._note(t, event, f"{sig.name} pid {','.join(str(v.pid) for v in victims)}")
        elif event.action == "restart-redis":
            self._note(t, event, self.restart_redis())
        elif event.action == "fault":
            if not self.faults_file:
                self._note(t, event, "no fault file: the stack was started without one")
                return
            rule = FaultRule(event.match, event.latency_s, 1.0, event.error, event.error_rate)
            write_rules(self.faults_file, [rule])
            self._note(
                t,
                event,
                f"{event.error or 'latency'} rate {event.error_rate:g} "
                f"latency {event.latency_s:g} s",
            )

    def undo(self, event: ChaosEvent, t: float) -> None:
        if event.action == "pause":
            for victim in self.find(event.target):
                os.kill(victim.pid, signal.SIGCONT)
            self.log.append(ChaosLog(round(t, 3), "resume", event.target, "SIGCONT"))
        elif event.action == "fault" and self.faults_file:
            write_rules(self.faults_file, [])
            self.log.append(ChaosLog(round(t, 3), "clear-faults", event.match, ""))

    def restart_redis(self) -> str:
        """Stop the stack's redis-server and start it again with the same command line."""
        found = self.find("redis")
        if not found:
            return "no redis-server below the stack (an external REDIS_URL?)"
        victim = found[0]
        cmdline = _cmdline(victim.pid)
        cwd = os.readlink(f"/proc/{victim.pid}/cwd")
        os.kill(victim.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{victim.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # not our child: /proc is the only place its exit shows
        Path(cwd).mkdir(parents=True, exist_ok=True)
        self.started.append(
            subprocess.Popen(
                [*parent_death_signal(), *cmdline],
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return f"pid {victim.pid} -> {self.started[-1].pid}"

    def close(self) -> None:
        """Resume anything still paused, clear faults, stop the redis we restarted."""
        for proc in stack_processes(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        if self.faults_file:
            write_rules(self.faults_file, [])
        for restarted in self.started:
            restarted.terminate()
            restarted.wait(timeout=10)
