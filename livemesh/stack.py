"""``livemesh demo``: runs the local topology of ``deploy/local.toml`` as child processes.

Redis comes first (the embedded one unless ``REDIS_URL`` is set), then every
process in the file's order, each waited for when it declares a readiness URL.
SIGINT or SIGTERM stops everything, children first, and leaves no process behind.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from livemesh.processes import parent_death_signal, stop_processes
from livemesh.redis_server import EmbeddedRedis, configured_redis_url
from livemesh.tokens import TokenSigner

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "deploy" / "local.toml"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PLACEHOLDER = re.compile(r"\{(redis_url|port:[a-z0-9_-]+|token:[^}]+)\}")
DEMO_TOKEN_TTL_S = 86_400


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    args: list[str]
    ready: str | None


@dataclass(frozen=True)
class Announcement:
    """A URL to print once ``ready`` (by default the URL itself) answers 200."""

    url: str
    ready: str


@dataclass(frozen=True)
class Topology:
    processes: list[ProcessSpec]
    announce: dict[str, Announcement]
    env: dict[str, str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def load_topology(path: Path, redis_url: str, free_ports: bool) -> Topology:
    """Read the topology file and fill in every placeholder."""
    raw = tomllib.loads(path.read_text())
    signer = TokenSigner.from_env()
    ports = {
        name: free_port() if free_ports else int(p) for name, p in raw.get("ports", {}).items()
    }

    def fill(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "redis_url":
                return redis_url
            kind, name = key.split(":", 1)
            if kind == "token":
                return signer.sign(name, session="demo", ttl_s=DEMO_TOKEN_TTL_S)
            return str(ports[name])

        return PLACEHOLDER.sub(value, text)

    processes = [
        ProcessSpec(
            p["name"], [fill(a) for a in p["args"]], fill(p["ready"]) if "ready" in p else None
        )
        for p in raw["process"]
    ]
    announce = {
        label: Announcement(fill(entry), fill(entry))
        if isinstance(entry, str)
        else Announcement(fill(entry["url"]), fill(entry["ready"]))
        for label, entry in raw.get("announce", {}).items()
    }
    env = {name: fill(value) for name, value in raw.get("env", {}).items()}
    return Topology(processes, announce, env)


def wait_ready(url: str, stop: threading.Event, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Wait until ``url`` answers 200; the processes give no other readiness signal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        stop.wait(0.1)
    return False


def child_command(spec: ProcessSpec) -> list[str]:
    """The command line of a stack process (it ends with the supervisor, however that ends)."""
    return [*parent_death_signal(), sys.executable, "-m", "livemesh.cli", *spec.args]


class Stack:
    """The running children of one ``livemesh demo``."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = threading.Event()

    def start(self, spec: ProcessSpec, env: dict[str, str]) -> None:
        # a child's own ready line on stdout ("gateway: http://…", for launchers that read
        # the port it bound) would come before it answers and repeat what the supervisor
        # announces once it does; its log (stderr) stays on the terminal
        proc = subprocess.Popen(
            child_command(spec), env={**os.environ, **env}, stdout=subprocess.DEVNULL
        )
        self.children.append((spec.name, proc))

    def first_dead(self) -> str | None:
        return next((name for name, proc in self.children if proc.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM every child, newest first; SIGKILL any still alive after the grace period."""
        self.stopping.set()
        stop_processes([proc for _name, proc in reversed(self.children)], STOP_TIMEOUT_S)


def run(topology_path: Path, free_ports: bool) -> int:
    embedded = None if configured_redis_url() else EmbeddedRedis()
    redis_url = configured_redis_url() or embedded.start()  # type: ignore[union-attr]
    stack = Stack()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stack.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return _supervise(stack, load_topology(topology_path, redis_url, free_ports))
    finally:
        stack.stop()
        if embedded is not None:
            embedded.stop()


def _supervise(stack: Stack, topology: Topology) -> int:
    for spec in topology.processes:
        stack.start(spec, topology.env)
        if spec.ready and not wait_ready(spec.ready, stack.stopping):
            return 0 if stack.stopping.is_set() else _fail(f"{spec.name} did not become ready")
    for label, announced in topology.announce.items():
        if not wait_ready(announced.ready, stack.stopping):
            return 0 if stack.stopping.is_set() else _fail(f"{announced.ready} did not answer")
        url = announced.url
        print(url if label == "mpd" else f"{label}: {url}", flush=True)
    while not stack.stopping.wait(0.5):  # children give no exit event to wait on together
        if dead := stack.first_dead():
            return _fail(f"{dead} exited; stopping the stack")
    return 0


def _fail(reason: str) -> int:
    print(f"livemesh demo: {reason}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh demo", description=__doc__)
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--free-ports", action="store_true", help="use free ports, not the file's")
    args = parser.parse_args(argv)
    return run(args.topology, args.free_ports)
