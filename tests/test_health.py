"""``livemesh health``: the image's HEALTHCHECK, run as the real command against a real
gRPC service process and a real HTTP server, and its choice of endpoint per kind."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from command import health as health_command
from command.health import Probe, Unchecked, check, kind_argv, probe_for, settings_for
from kernel.config import ConfigError
from kernel.ports import free_port
from kernel.rpc.tls import CA_ENV, PrivateCA, TlsPaths

ROOT = Path(__file__).resolve().parent.parent
NO_FILE = {"LIVEMESH_SETTINGS": ""}


def health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVEMESH_TLS_")}
    return subprocess.run(
        [sys.executable, "-m", "command.cli", "health", "--timeout", "2", *args],
        env={**clean, **NO_FILE, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def catalog(env: dict[str, str]) -> Iterator[int]:
    """A real ``livemesh catalog`` process on a known port, ready once it printed it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "command.cli", "catalog", "--port", str(port)],
        env={**os.environ, **NO_FILE, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("catalog: ")
    try:
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


@pytest.fixture
def catalog_port() -> Iterator[int]:
    yield from catalog({})


@pytest.fixture
def tls() -> Iterator[TlsPaths]:
    ca = PrivateCA()
    yield ca.issue("catalog")
    ca.close()


def test_a_service_on_mtls_is_checked_with_the_process_certificate(tls: TlsPaths) -> None:
    for port in catalog(tls.env()):
        done = health("catalog", "--port", str(port), env=tls.env())
        assert done.returncode == 0, done.stderr
        assert f"grpc://127.0.0.1:{port}: healthy" in done.stdout
        plain = health("catalog", "--port", str(port))  # the server takes TLS only
        assert plain.returncode == 1 and "gRPC UNAVAILABLE" in plain.stderr
        half = health("catalog", "--port", str(port), env={CA_ENV: str(tls.ca)})
        assert half.returncode == 2 and "LIVEMESH_TLS_CERT" in half.stderr


def test_a_serving_grpc_service_is_healthy_and_a_stopped_one_is_not(catalog_port: int) -> None:
    done = health("catalog", "--port", str(catalog_port))
    assert done.returncode == 0, done.stderr
    assert f"grpc://127.0.0.1:{catalog_port}: healthy" in done.stdout
    free = free_port()
    done = health("catalog", "--port", str(free))
    assert done.returncode == 1
    assert f"grpc://127.0.0.1:{free}: gRPC UNAVAILABLE" in done.stderr


def test_with_no_operands_pid_1_is_checked(
    catalog_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What the image's HEALTHCHECK runs: PID 1's command line, NUL-separated."""
    cmdline = ["/usr/local/bin/python3.11", "/usr/local/bin/livemesh", "catalog"]
    pid1 = tmp_path / "cmdline"
    pid1.write_bytes(
        b"\0".join(w.encode() for w in [*cmdline, "--port", str(catalog_port)]) + b"\0"
    )
    monkeypatch.setattr(health_command, "PID1_CMDLINE", pid1)
    monkeypatch.setenv("LIVEMESH_SETTINGS", "")
    assert health_command.main([]) == 0
    assert f"grpc://127.0.0.1:{catalog_port}: healthy" in capsys.readouterr().out
    pid1.write_bytes(b"/bin/sh\0-c\0sleep 1\0")
    assert health_command.main([]) == 2
    assert "not a livemesh process" in capsys.readouterr().err


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()


def test_an_edge_is_checked_on_healthz_and_a_draining_one_fails(
    http_server: http.server.HTTPServer,
) -> None:
    port = http_server.server_address[1]
    probe = probe_for(settings_for(["edge", "--port", str(port)], NO_FILE).settings)
    assert probe == Probe("http", "127.0.0.1", port, "/healthz")
    assert check(probe, 2.0) is None
    _Handler.status = 503  # what a draining edge answers
    try:
        assert check(probe, 2.0) == "HTTP 503"
    finally:
        _Handler.status = 200


def test_each_kind_is_checked_where_it_answers() -> None:
    def probe(*argv: str) -> str:
        return str(probe_for(settings_for(list(argv), NO_FILE).settings))

    assert probe("playback") == "grpc://127.0.0.1:50057"
    assert probe("registry", "--host", "0.0.0.0", "--port", "7") == "grpc://127.0.0.1:7"
    assert probe("gateway") == "http://127.0.0.1:8000/healthz"
    assert probe("origin", "--port", "9") == "http://127.0.0.1:9/time"
    assert probe("ingest") == "http://127.0.0.1:8070/healthz"
    assert probe("channel", "demo", "--metrics-port", "9100") == "http://127.0.0.1:9100/metrics"
    pipeline = ("channel", "demo", "--pipeline", "b", "--metrics-port", "9101")  # a k8s pod's
    assert probe(*pipeline) == "http://127.0.0.1:9101/metrics"
    with pytest.raises(Unchecked, match="--metrics-port"):
        probe("channel", "demo")
    with pytest.raises(Unchecked, match="not a server"):
        probe("loadtest")


def test_the_process_is_read_from_a_command_line_and_bad_flags_are_named() -> None:
    cmdline = ["/usr/local/bin/python3.11", "/usr/local/bin/livemesh", "edge", "--port", "1"]
    assert kind_argv(cmdline) == ["edge", "--port", "1"]
    with pytest.raises(Unchecked, match="not a livemesh process"):
        kind_argv(["/bin/sh", "-c", "sleep 1"])
    with pytest.raises(ConfigError, match="unknown flags"):
        settings_for(["edge", "--no-such-flag"], NO_FILE)
    with pytest.raises(ConfigError, match="not a livemesh process kind"):
        settings_for(["nginx"], NO_FILE)
    done = health("config")
    assert done.returncode == 2 and "not a livemesh process kind" in done.stderr
