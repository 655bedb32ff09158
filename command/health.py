"""``livemesh health [KIND [FLAGS...]]``: is this process answering on its own endpoint?

The container image's HEALTHCHECK runs it with no operands: it then reads the command
line of PID 1 (``livemesh KIND FLAGS...``, the image's entry point) and checks that
process, on the port its settings give (flags over environment over settings file, as
the process itself resolved them). Each kind is checked where it answers:

- the gRPC services (registry, identity, catalog, ...): the gRPC health protocol
  (``grpc.health.v1.Health/Check``, overall service ``""``), SERVING or fail; over mTLS
  with the process's own certificate when it has TLS settings (``LIVEMESH_TLS_*``: the
  server then takes nothing else), so that certificate must name 127.0.0.1;
- ``edge`` (edges and shields) and ``gateway``: HTTP ``GET /healthz`` (503 while draining);
- ``origin``: HTTP ``GET /time`` (it has no other cheap endpoint);
- ``ingest``: HTTP ``GET /healthz`` on its WHIP port;
- ``channel``: its Prometheus ``/metrics``, only where ``--metrics-port`` is given;
- ``qoe``: ``GET /healthz`` on its metrics port (its consume loop is turning).

Exit 0 when healthy, 1 when not, 2 when the kind has no endpoint to check.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.config import (
    KINDS,
    ConfigError,
    GatewaySettings,
    Loaded,
    ServiceSettings,
    Settings,
    add_flags,
    load,
)
from kernel.rpc.tls import TlsPaths, channel_credentials, read_material, tls_settings

PID1_CMDLINE = Path("/proc/1/cmdline")
WILDCARDS = ("0.0.0.0", "::", "")
# the HTTP path each HTTP-serving kind answers cheaply
HTTP_PATHS = {"edge": "/healthz", "gateway": "/healthz", "origin": "/time", "ingest": "/healthz"}


class Unchecked(Exception):
    """The process kind has no endpoint to check (a one-shot command, a bare channel)."""


@dataclass(frozen=True)
class Probe:
    """Where a process answers: ``grpc`` at ``host:port``, or an HTTP URL."""

    scheme: str
    host: str
    port: int
    path: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


def kind_argv(cmdline: Sequence[str]) -> list[str]:
    """``KIND FLAGS...`` out of a process's full command line (``python .../livemesh
    KIND ...`` or ``livemesh KIND ...``)."""
    for i, word in enumerate(cmdline):
        if Path(word).name == "livemesh":
            return list(cmdline[i + 1 :])
    raise Unchecked(f"not a livemesh process: {' '.join(cmdline)!r}")


def settings_for(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Loaded[Settings]:
    """The settings ``livemesh KIND FLAGS...`` would run with under ``environ`` (default:
    this process's environment, which a probe inside the container shares). Operands
    the kind's settings do not declare (``channel NAME``) are left aside; an unknown flag
    is an error, as it would be for the process."""
    if not argv or argv[0] not in KINDS:
        raise ConfigError(f"{' '.join(argv) or '(nothing)'}: not a livemesh process kind")
    cls = KINDS[argv[0]]
    parser = argparse.ArgumentParser(prog=f"livemesh {argv[0]}", add_help=False)
    add_flags(parser, cls)
    known, rest = parser.parse_known_args(list(argv[1:]))
    unknown = [word for word in rest if word.startswith("-")]
    if unknown:
        raise ConfigError(f"livemesh {argv[0]}: unknown flags {unknown}")
    return load(cls, vars(known), environ)


def probe_for(settings: Settings) -> Probe:
    """The endpoint that tells whether a process with ``settings`` is healthy."""
    kind = settings.kind
    host = str(getattr(settings, "host", "127.0.0.1"))
    host = "127.0.0.1" if host in WILDCARDS else host
    if isinstance(settings, ServiceSettings) and not isinstance(settings, GatewaySettings):
        return Probe("grpc", host, settings.port)
    if kind == "channel":
        metrics: int | None = getattr(settings, "metrics_port", None)
        if metrics is None:
            raise Unchecked("livemesh channel serves nothing to check without --metrics-port")
        return Probe("http", "127.0.0.1", metrics, "/metrics")
    if kind == "qoe":
        metrics_host = str(getattr(settings, "metrics_host", host))
        metrics_host = "127.0.0.1" if metrics_host in WILDCARDS else metrics_host
        return Probe("http", metrics_host, int(getattr(settings, "metrics_port", 0)), "/healthz")
    if kind in HTTP_PATHS:
        port = getattr(settings, "http_port", getattr(settings, "port", 0))
        return Probe("http", host, int(port), HTTP_PATHS[kind])
    raise Unchecked(f"livemesh {kind} is not a server")


def check(probe: Probe, timeout_s: float, tls: TlsPaths | None = None) -> str | None:
    """None when ``probe`` answers healthy, else why not; gRPC over mTLS with ``tls``."""
    if probe.scheme == "grpc":
        return _check_grpc(probe, timeout_s, tls)
    try:
        with urllib.request.urlopen(str(probe), timeout=timeout_s) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return str(exc)


def _channel(target: str, tls: TlsPaths | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, channel_credentials(read_material(tls)))


def _check_grpc(probe: Probe, timeout_s: float, tls: TlsPaths | None) -> str | None:
    try:
        channel = _channel(f"{probe.host}:{probe.port}", tls)
    except (OSError, ValueError) as exc:
        return f"TLS files: {exc}"
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
        except grpc.RpcError as exc:
            return f"gRPC {exc.code().name}"  # type: ignore[attr-defined]
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="livemesh health",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("process", nargs=argparse.REMAINDER, help="KIND FLAGS... (default: PID 1)")
    args = parser.parse_args(argv)
    try:
        target = args.process or kind_argv(PID1_CMDLINE.read_bytes().decode().split("\0")[:-1])
        probe = probe_for(settings_for(target).settings)
        tls = tls_settings()
    except (Unchecked, ConfigError, OSError, ValueError) as exc:
        print(f"livemesh health: {exc}", file=sys.stderr)
        return 2
    problem = check(probe, args.timeout, tls)
    print(f"{probe}: {problem or 'healthy'}", file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0
