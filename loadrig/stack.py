"""The stack a load test runs against, started by the rig itself.

The local topology of ``deploy/local.toml`` on free ports (``kernel.supervise``'s loader),
but supervised here: a child that dies (a chaos kill) does not stop the others, each
child's output goes to ``<log_dir>/<name>.log`` (the origin's access log is how the
report counts origin requests per object), and every service watches a fault file.
The rig is the stack's operator: it holds an operator certificate and mints operator
credentials (:meth:`RigStack.experiments`, for a scenario's experiment).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from types import TracebackType

from kernel.defect_faults import PIPELINE_FAULTS_ENV, PIPELINE_FAULTS_NAME
from kernel.redis_server import EmbeddedRedis, configured_redis_url
from kernel.rpc import credentials
from kernel.rpc.auth import OPERATOR
from kernel.rpc.resilience.faults import FAULTS_FILE_ENV
from kernel.rpc.tls import PrivateCA
from kernel.supervise import (
    DEFAULT_TOPOLOGY,
    RunKeys,
    Stack,
    child_command,
    child_env,
    load_topology,
    run_keys,
    wait_ready,
)
from loadrig.experiment import Access

EXPERIMENTS_TARGET_ENV = "LIVEMESH_EXPERIMENTS_TARGET"


class RigStack:
    def __init__(self, log_dir: Path, topology: Path = DEFAULT_TOPOLOGY) -> None:
        self.log_dir = log_dir
        self.topology = topology
        self.faults_file = str(log_dir / "faults.json")
        self.stack = Stack()
        self.redis: EmbeddedRedis | None = None
        self.ca: PrivateCA | None = None
        self.announced: dict[str, str] = {}
        self.keys: RunKeys | None = None
        self.experiments_target = ""

    def start(self) -> RigStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = configured_redis_url()
        if url is None:
            self.redis = EmbeddedRedis()
            url = self.redis.start()
        self.ca = PrivateCA()
        self.keys = run_keys()
        topology = load_topology(self.topology, url, free_ports=True, ca=self.ca, keys=self.keys)
        self.experiments_target = next(
            (
                p.env[EXPERIMENTS_TARGET_ENV]
                for p in topology.processes
                if EXPERIMENTS_TARGET_ENV in p.env
            ),
            "",
        )
        stop = threading.Event()
        for spec in topology.processes:
            env = {**child_env(spec), FAULTS_FILE_ENV: self.faults_file}
            env[PIPELINE_FAULTS_ENV] = str(self.log_dir / PIPELINE_FAULTS_NAME)
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

    def experiments(self) -> Access:
        """The experiment service as the stack's operator calls it."""
        assert self.ca is not None and self.keys is not None, "the stack is not started"
        token = credentials.mint(self.keys.credential, OPERATOR, "loadrig")
        return Access(self.experiments_target, token, self.ca.issue(OPERATOR))

    def stop(self) -> None:
        self.stack.stop()
        if self.ca is not None:
            self.ca.close()
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
