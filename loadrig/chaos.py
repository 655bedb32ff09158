"""Chaos actions against a running stack: kill or pause a process by name, restart Redis,
inject gRPC faults.

The stack's processes are found below a root pid (the rig itself when it started the
stack, or a ``livemesh demo`` supervisor given with ``--attach``) from /proc: every
``python -m command.cli <command> ...`` child is named by its ``--name`` (``edge-1``,
``shield-1``), its command (``origin``, ``gateway``, ``playback``), ``shield`` for the
shield tier, ``channel-<name>`` for a channel and, for one of its redundant pipelines,
``pipeline-<p>`` and ``channel-<name>-<p>``; ``redis`` names the redis-server.
A pipeline can also be told to break its own chunks for a while (``defect``: truncated
chunks or dropped frames, :mod:`kernel.defect_faults`, through the file beside the fault
file); a *delayed* pipeline is a ``pause`` of one.
The same command lines tell where each node listens (``--port``), which the metrics
collector uses.  gRPC faults go through the resilience layer's fault file
(``LIVEMESH_FAULTS_FILE``, re-read by every service when it changes).
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kernel import clock, procfs
from kernel.defect_faults import PIPELINE_FAULTS_NAME, DefectRule
from kernel.defect_faults import write_rules as write_defects
from kernel.processes import parent_death_signal, send_signal, stop_processes, wait_exit
from kernel.rpc.resilience.faults import FaultRule, write_rules
from loadrig.scenario import ChaosEvent


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
        if "--pipeline" in argv[:-1]:
            pipeline = argv[argv.index("--pipeline") + 1]
            names |= {f"pipeline-{pipeline}", f"channel-{argv[1]}-{pipeline}"}
    return frozenset(names)


def livemesh_argv(cmdline: list[str]) -> list[str] | None:
    """The sub-command argv of a ``-m command.cli`` process, redis-server's argv, or None."""
    if "command.cli" in cmdline:
        return cmdline[cmdline.index("command.cli") + 1 :]
    if cmdline and Path(cmdline[0]).name.startswith("redis-server"):
        return ["redis-server", *cmdline[1:]]
    return None


def stack_processes(root: int) -> list[StackProcess]:
    """The livemesh processes (and redis-server) below ``root``."""
    out = []
    for pid in procfs.descendants(root):
        argv = livemesh_argv(procfs.cmdline(pid))
        if argv is not None:
            out.append(StackProcess(pid, tuple(argv), names_of(argv)))
    return out


REDIS_STOP_S = 5.0  # how long redis-server may take to save and exit on SIGTERM

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
    """Applies a scenario's chaos events to the stack below ``root``."""

    root: int
    faults_file: str | None = None
    log: list[ChaosLog] = field(default_factory=list)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)  # restarted redis
    defects: list[DefectRule] = field(default_factory=list)  # in force, by defect events

    @property
    def defects_file(self) -> Path | None:
        """The pipelines' defect rules: beside the fault file (the rig's stack names it)."""
        return Path(self.faults_file).with_name(PIPELINE_FAULTS_NAME) if self.faults_file else None

    def find(self, name: str) -> list[StackProcess]:
        """The processes a target names; ``busiest-edge`` is the edge serving the most now."""
        processes = stack_processes(self.root)
        if name == BUSIEST_EDGE:
            edges = [p for p in processes if "edge" in p.names and "shield" not in p.names]
            return [max(edges, key=lambda p: procfs.cpu_seconds(p.pid))] if edges else []
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
                send_signal(victim.pid, sig)
            self._note(t, event, f"{sig.name} pid {','.join(str(v.pid) for v in victims)}")
        elif event.action == "restart-redis":
            self._note(t, event, self.restart_redis())
        elif event.action == "defect":
            self._note(t, event, self._defect(event))
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
                send_signal(victim.pid, signal.SIGCONT)
            self.log.append(ChaosLog(round(t, 3), "resume", event.target, "SIGCONT"))
        elif event.action == "fault" and self.faults_file:
            write_rules(self.faults_file, [])
            self.log.append(ChaosLog(round(t, 3), "clear-faults", event.match, ""))
        elif event.action == "defect" and self.defects_file is not None:
            pipeline = event.target.removeprefix("pipeline-")
            self.defects = [
                r for r in self.defects if (r.pipeline, r.kind) != (pipeline, event.match)
            ]
            write_defects(self.defects_file, self.defects)
            self.log.append(ChaosLog(round(t, 3), "clear-defect", event.target, event.match))

    def _defect(self, event: ChaosEvent) -> str:
        """Tell a pipeline to break its chunks for the event's duration."""
        if self.defects_file is None:
            return "no fault file: the stack was started without one"
        pipeline = event.target.removeprefix("pipeline-")
        until = clock.now_ms() + int(event.duration_s * 1000)
        self.defects.append(DefectRule(pipeline, event.match, until))
        write_defects(self.defects_file, self.defects)
        return f"{event.match} in pipeline {pipeline} for {event.duration_s:g} s"

    def restart_redis(self) -> str:
        """Stop the stack's redis-server and start it again with the same command line."""
        found = self.find("redis")
        if not found:
            return "no redis-server below the stack (an external REDIS_URL?)"
        victim = found[0]
        cmdline = procfs.cmdline(victim.pid)
        cwd = procfs.cwd(victim.pid)
        send_signal(victim.pid, signal.SIGTERM)
        wait_exit(victim.pid, REDIS_STOP_S)
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
            send_signal(proc.pid, signal.SIGCONT)
        if self.faults_file:
            write_rules(self.faults_file, [])
        if self.defects_file is not None and self.defects:
            write_defects(self.defects_file, [])
        stop_processes(self.started, grace_s=REDIS_STOP_S * 2)
