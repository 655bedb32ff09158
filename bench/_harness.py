"""Shared helpers of the benchmarks: child processes, readiness, figures, live viewers.

- :class:`Procs` starts children (optionally pinned with ``taskset``) and stops them all,
  newest first, SIGTERM then SIGKILL after a grace period; it is a context manager, so a
  failing bench leaves nothing behind.
- :func:`print_result` (the one ``RESULT {json}`` line every bench ends with); the figures
  themselves (percentiles, ``summary_ms``) come from :mod:`kernel.stats`.
- :class:`LiveViewer` (:mod:`_viewers`) and the live channel's progress read from Redis
  (:mod:`_live_channel`); they are re-exported here because this module puts the
  repository on the path, so every bench has one import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _live_channel import chunk_times, next_segment, stored_at, wait_live  # noqa: E402
from _viewers import LiveViewer  # noqa: E402

from kernel.channel_config import ChannelConfig  # noqa: E402
from kernel.channel_config_store import create_channel_config  # noqa: E402
from kernel.ports import free_port  # noqa: E402
from kernel.processes import stop_processes  # noqa: E402
from kernel.procfs import cpu_seconds  # noqa: E402
from kernel.supervise import TOKEN_KEYS_ENV, wait_ready  # noqa: E402
from kernel.tokens import TokenSigner, new_keys  # noqa: E402
from loadrig.looplag import LoopLag  # noqa: E402

__all__ = [
    "ROOT",
    "LiveViewer",
    "LoopLag",
    "chunk_times",
    "free_port",
    "next_segment",
    "stored_at",
    "wait_live",
    "wait_ready",
]

CLI = [sys.executable, "-m", "command.cli"]
STOP_GRACE_S = 10.0


# -- processes ---------------------------------------------------------------------------


def pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    """``command`` run on the CPU list ``cpus`` (``taskset -c``), or as is."""
    if cpus is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", cpus, *command]


class Procs:
    """The children of one bench run."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.log_dir = log_dir  # children's stderr goes to {log_dir}/{name}.log when set
        self.token_keys = new_keys()  # the run's URL-token keys: its edges verify with them
        self.signer = TokenSigner.from_spec(self.token_keys)

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        cpus: str | None = None,
        ready: str | None = None,
        quiet: bool = True,
        timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        out = subprocess.DEVNULL if quiet else None
        if self.log_dir is None:
            proc = subprocess.Popen(pinned(command, cpus), stdout=out, stderr=out, env=env)
        else:
            with open(os.path.join(self.log_dir, f"{name}.log"), "wb") as log:
                proc = subprocess.Popen(pinned(command, cpus), stdout=out, stderr=log, env=env)
        self.children.append((name, proc))
        if ready is not None and not wait_ready(ready, threading.Event(), timeout_s):
            raise SystemExit(f"{name} did not become ready at {ready}")
        return proc

    def edge(
        self,
        name: str,
        tier: str,
        parents: Sequence[str],
        fallbacks: Sequence[str] = (),
        *,
        tokens: bool = True,
        cpus: str | None = None,
    ) -> str:
        """Start a ``livemesh edge`` node on a free port, verifying tokens signed with
        :attr:`signer` unless ``tokens`` is off; its base URL once it answers."""
        port = free_port()
        command = [*CLI, "edge", "--host", "127.0.0.1", "--port", str(port), "--name", name]
        command += ["--tier", tier, "--log-level", "WARNING"]
        command += [a for p in parents for a in ("--parent", p)]
        command += [a for p in fallbacks for a in ("--fallback", p)]
        if not tokens:
            command.append("--no-tokens")
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, TOKEN_KEYS_ENV: self.token_keys}
        self.start(name, command, cpus=cpus, ready=f"{base}/healthz", env=env)
        return base

    def origin(self, redis_url: str, *, cpus: str | None = None) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [*CLI, "origin", "--port", str(port), "--redis-url", redis_url]
        self.start("origin", command, cpus=cpus, ready=f"{base}/time")
        return base

    def channel(self, name: str, redis_url: str, *, cpus: str | None = None) -> None:
        create_channel_config(redis_url, ChannelConfig(name))  # as the channels service would
        self.start("channel", [*CLI, "channel", name, "--redis-url", redis_url], cpus=cpus)

    def log_lines(self, name: str, needle: str) -> list[str]:
        """Lines of child ``name``'s log containing ``needle`` (with ``log_dir``)."""
        if self.log_dir is None:
            return []
        path = Path(self.log_dir) / f"{name}.log"
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if needle in line]

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each child, by name."""
        return {name: cpu_seconds(proc.pid) for name, proc in self.children}

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}")

    def stop(self) -> None:
        stop_processes([proc for _name, proc in reversed(self.children)], STOP_GRACE_S)
        self.children.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's (and so its children's) open-file limit towards ``wanted``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def loadavg() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} cores)"


# -- metrics -------------------------------------------------------------------------------


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of every sample of ``name`` (whose label text contains ``labels``)."""
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(m.group(2)) for m in pattern.finditer(text) if labels in (m.group(1) or ""))


def origin_requests(origin: str) -> int:
    """Responses the origin has sent (every status), from its own /metrics."""
    return int(metric_sum(scrape(f"{origin}/metrics"), "livemesh_origin_responses_total"))


def edge_fetches(node: str) -> int:
    """Requests this node has sent to its parents, from its own /metrics."""
    return int(metric_sum(scrape(f"{node}/metrics"), "livemesh_edge_upstream_fetches_total"))


# -- figures -------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


def print_result(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result), flush=True)
