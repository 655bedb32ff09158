"""The stack a load test runs against, started by the rig itself.

The local topology of ``deploy/local.toml`` on free ports (``livemesh.stack``'s loader),
but supervised here: a child that dies (a chaos kill) does not stop the others, each
child's output goes to ``<log_dir>/<name>.log`` (the origin's access log is how the
report counts origin requests per object), and every service watches a fault file.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from types import TracebackType

from livemesh.redis_server import EmbeddedRedis, configured_redis_url
from livemesh.stack import DEFAULT_TOPOLOGY, Stack, child_command, load_topology, wait_ready
from services.resilience.faults import FAULTS_FILE_ENV


class RigStack:
    def __init__(self, log_dir: Path, topology: Path = DEFAULT_TOPOLOGY) -> None:
        self.log_dir = log_dir
        self.topology = topology
        self.faults_file = str(log_dir / "faults.json")
        self.stack = Stack()
        self.redis: EmbeddedRedis | None = None
        self.announced: dict[str, str] = {}

    def start(self) -> RigStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = configured_redis_url()
        if url is None:
            self.redis = EmbeddedRedis()
            url = self.redis.start()
        topology = load_topology(self.topology, url, free_ports=True)
        env = {**os.environ, **topology.env, FAULTS_FILE_ENV: self.faults_file}
        stop = threading.Event()
        for spec in topology.processes:
            with open(self.log_dir / f"{spec.name}.log", "wb") as log:
                proc = subprocess.Popen(
                    child_command(spec),
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            self.stack.children.append((spec.name, proc))
            if spec.ready and not wait_ready(spec.ready, stop):
                raise RuntimeError(f"{spec.name} did not become ready (see {self.log_dir})")
        for label, announced in topology.announce.items():
            # an Announcement: the URL to print and the one that answers once it is usable
            if not wait_ready(announced.ready, stop):
                raise RuntimeError(f"{announced.ready} did not answer")
            self.announced[label] = announced.url
        return self

    @property
    def gateway(self) -> str:
        return self.announced["gateway"]

    def stop(self) -> None:
        self.stack.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> RigStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
