"""A kind with ``workers`` (kernel/workers.py): N processes share one port through
SO_REUSEPORT and every one of them serves; the group stops with its leader, and a worker
that dies takes the leader down with a reason instead of leaving it short."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from kernel import procfs, workers
from kernel.config import GatewaySettings, PlaybackSettings
from kernel.config.load import SETTINGS_ENV
from kernel.ports import free_port
from kernel.processes import stop_processes, wait_exit
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.resilience import balancer
from kernel.supervise import TOKEN_KEYS_ENV
from kernel.tokens import new_keys
from tests.stack_helpers import ROOT

CONNECTIONS = 16  # all on one of 2 workers by chance: 2 ** -15
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Group:
    """A ``livemesh KIND --workers 2`` leader, its ready address and its pids."""

    def __init__(self, kind: str, env: dict[str, str], *args: str) -> None:
        self.leader = subprocess.Popen(
            [sys.executable, "-m", "command.cli", kind, "--port", "0", "--workers", "2", *args],
            cwd=ROOT,
            env={**os.environ, **env, "LIVEMESH_LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # warnings and worse only: a few lines at most
            text=True,
        )
        assert self.leader.stdout is not None
        line = self.leader.stdout.readline().strip()  # printed once every worker is ready
        assert line.startswith(f"{kind}: "), line
        self.address = line.split(": ", 1)[1].removeprefix("http://")
        self.port = int(self.address.rsplit(":", 1)[1])

    @property
    def pids(self) -> set[int]:
        return {self.leader.pid, *procfs.children(self.leader.pid)}


@pytest.fixture
def group_of(redis_url: str) -> Iterator[type[Group]]:
    started: list[Group] = []
    env = {"REDIS_URL": redis_url, TOKEN_KEYS_ENV: new_keys()}

    def start(kind: str, *args: str) -> Group:
        started.append(Group(kind, env, *args))
        return started[-1]

    yield start  # type: ignore[misc]
    stop_processes([group.leader for group in started], 15)


def connection_owners(port: int, pids: set[int]) -> Counter[int]:
    """How many accepted connections on loopback ``port`` each of ``pids`` holds (from
    /proc: the kernel's own account of which socket, of which process, took each)."""
    accepted = set()
    for table in ("tcp", "tcp6"):  # gRPC listens dual-stack: IPv4 as v4-mapped IPv6
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED, the server's side
                accepted.add(fields[9])  # inode
    owners: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in accepted:
                owners[pid] += 1
    return owners


def test_two_gateway_workers_share_one_port_and_both_answer(group_of: type[Group]) -> None:
    gateway = group_of("gateway")
    assert len(gateway.pids) == 2
    host, port = gateway.address.rsplit(":", 1)
    held = []
    for _ in range(CONNECTIONS):  # each a connection of its own, kept open
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b'{"status": "ok"}'
        held.append(conn)
    owners = connection_owners(gateway.port, gateway.pids)
    assert set(owners) == gateway.pids and sum(owners.values()) == CONNECTIONS
    for conn in held:
        conn.close()


def test_two_playback_workers_share_one_port_and_both_answer(group_of: type[Group]) -> None:
    playback = group_of("playback")
    assert len(playback.pids) == 2
    # a private subchannel pool per channel: one TCP connection each (not shared)
    channels = [
        grpc.insecure_channel(playback.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    for channel in channels:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="livemesh.playback.v1.PlaybackService"),
            timeout=10,
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    owners = connection_owners(playback.port, playback.pids)
    assert set(owners) == playback.pids and sum(owners.values()) == CONNECTIONS
    for channel in channels:
        channel.close()


async def test_the_services_clients_reach_every_worker(group_of: type[Group]) -> None:
    """The client layer's connections to one instance land on both workers (the kernel
    hands each connection to one), so calls through it load both; two clients, as the
    gateway's two workers are."""
    playback = group_of("playback")
    factories = [RpcChannelFactory(tls=None) for _ in range(2)]
    try:
        for factory in factories:
            health = factory.stub(health_pb2_grpc.HealthStub, playback.address)
            for _ in range(balancer.CONNECTIONS):  # idle: one call on each connection in turn
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        owners = connection_owners(playback.port, playback.pids)
        assert set(owners) == playback.pids
        assert sum(owners.values()) == 2 * balancer.CONNECTIONS
    finally:
        for factory in factories:
            await factory.close()


def test_the_workers_stop_with_their_leader(group_of: type[Group]) -> None:
    gateway = group_of("gateway")
    (follower,) = gateway.pids - {gateway.leader.pid}
    gateway.leader.send_signal(signal.SIGTERM)
    assert gateway.leader.wait(timeout=30) == 0
    assert wait_exit(follower, 10)


def test_a_worker_that_dies_stops_its_leader_with_the_reason(group_of: type[Group]) -> None:
    gateway = group_of("gateway")
    (follower,) = gateway.pids - {gateway.leader.pid}
    os.kill(follower, signal.SIGKILL)
    assert gateway.leader.wait(timeout=30) == 1
    assert gateway.leader.stderr is not None
    assert f"worker {follower} exited with -9" in gateway.leader.stderr.read()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the ``name`` samples with ``labels`` (and any others) in a Prometheus
    text exposition."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and found.labels.items() >= labels.items()
    )


def test_a_gateway_scrape_tells_every_workers_figures(group_of: type[Group]) -> None:
    """Each /readyz makes one health call per service, counted by the worker that took
    it; /metrics, answered by one worker, tells the calls of both."""
    gateway = group_of("gateway")
    host, port = gateway.address.rsplit(":", 1)
    held = []
    for _ in range(CONNECTIONS):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/readyz")  # no service runs: 503, each call UNAVAILABLE
        assert conn.getresponse().status == 503
        held.append(conn)
    assert set(connection_owners(gateway.port, gateway.pids)) == gateway.pids  # both took some
    for conn in held:
        conn.close()
    for _ in range(2):  # whichever worker answers the scrape
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        calls = sample(text, "livemesh_rpc_calls_total", method=HEALTH_CHECK,
                       dependency="127.0.0.1:50053")  # fmt: skip
        assert calls == CONNECTIONS


def test_a_playback_scrape_tells_every_workers_figures(group_of: type[Group]) -> None:
    metrics_port = free_port()
    playback = group_of("playback", "--metrics-port", str(metrics_port))
    channels = [
        grpc.insecure_channel(playback.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    for channel in channels:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert set(connection_owners(playback.port, playback.pids)) == playback.pids
    for channel in channels:
        channel.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as got:
        text = got.read().decode()
    served = sample(text, "livemesh_rpc_served_total", method=HEALTH_CHECK, code="OK")
    assert served == CONNECTIONS
    assert all(metric_files(pid) for pid in playback.pids)  # shared through files


def metric_files(pid: int) -> list[str]:
    """The multiprocess-mode value files ``pid`` has mapped (prometheus_client's mmaps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return re.findall(r"/(?:counter|gauge_\w+|histogram)_\d+\.db$", maps, re.MULTILINE)


def test_a_playback_alone_keeps_its_figures_in_memory(group_of: type[Group]) -> None:
    """A group of one shares its metrics with nobody: no value files, the same figures."""
    metrics_port = free_port()
    playback = group_of("playback", "--workers", "1", "--metrics-port", str(metrics_port))
    assert playback.pids == {playback.leader.pid}
    with grpc.insecure_channel(playback.address) as channel:
        for _ in range(3):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as got:
        text = got.read().decode()
    assert sample(text, "livemesh_rpc_served_total", method=HEALTH_CHECK, code="OK") == 3
    assert metric_files(playback.leader.pid) == []


async def test_a_follower_printing_after_it_is_ready_is_never_blocked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A follower's stdout is read after its ready line: a megabyte more (16 pipes' worth,
    one line) is written, and it exits, instead of blocking on a full pipe."""
    script = (
        "import sys; print('follower: ready', flush=True); "
        "sys.stdout.write('x' * (1 << 20) + '\\n'); sys.stdout.flush()"
    )
    monkeypatch.setattr(workers, "follower_command", lambda port: [sys.executable, "-c", script])
    caplog.set_level(logging.INFO, logger=workers.__name__)
    async with workers.group(2, 0) as group:
        (follower,) = group.followers
        async with asyncio.timeout(20):
            assert await follower.wait() == 0
    logged = "".join(r.getMessage() for r in caplog.records)
    assert logged.count("x") >= 1 << 20


def test_the_group_size_is_read_before_the_process_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What decides whether a kind's metrics go to shared files (a group of more than one)
    or stay in memory: the flag over the environment over the default of one, 0 one per
    core, and None (the process's own parser then says why) for a bad value."""
    monkeypatch.delenv("LIVEMESH_WORKERS", raising=False)
    monkeypatch.setenv(SETTINGS_ENV, "")  # no settings file
    assert workers.group_size(PlaybackSettings, ["--port", "0"]) == 1
    assert workers.group_size(GatewaySettings, ["--workers", "3", "--rate", "5"]) == 3
    assert workers.group_size(GatewaySettings, ["--workers=2"]) == 2
    assert workers.group_size(PlaybackSettings, ["--workers", "0"]) == workers.count(0) > 0
    monkeypatch.setenv("LIVEMESH_WORKERS", "4")
    assert workers.group_size(PlaybackSettings, []) == 4
    assert workers.group_size(PlaybackSettings, ["--workers", "1"]) == 1
    assert workers.group_size(PlaybackSettings, ["--workers", "many"]) is None
