"""The QoE processor's own health, beside its /metrics: what a probe asks of it.

A consumer whose Redis is gone keeps its process and its /metrics thread alive while it
counts nothing, so answering HTTP says little. Its loop notes each turn in a
:class:`Beat`: ``/readyz`` answers 200 while a read and commit succeeded in the last
``READY_S`` (503 naming the last error otherwise), ``/healthz`` while the loop turned at
all in the last ``LIVE_S`` (a failing Redis call is a turn: restarting the pod would not
bring Redis back; a loop that stopped turning would need it). Every other path is
Prometheus' /metrics, served as ``prometheus_client`` does, in a thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from kernel import clock

READY_S = 10  # longest without a successful read and commit before /readyz says 503
LIVE_S = 30  # longest without a turn of the loop before /healthz says 503
HEALTH_PATHS = ("/healthz", "/readyz")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Beat:
    """When the consume loop last turned and last succeeded (ms), and its last error."""

    turned_ms: int
    ok_ms: int | None = None
    error: str = ""

    def ok(self) -> None:
        self.turned_ms = self.ok_ms = clock.now_ms()
        self.error = ""

    def failed(self, error: BaseException) -> None:
        self.turned_ms = clock.now_ms()
        self.error = repr(error)

    def problem(self, path: str, now_ms: int) -> str | None:
        """None when ``path`` (/healthz or /readyz) is healthy at ``now_ms``, else why not."""
        if path == "/healthz":
            idle_s = (now_ms - self.turned_ms) / 1000
            return None if idle_s <= LIVE_S else f"the consume loop idle for {idle_s:.0f} s"
        if self.ok_ms is not None and now_ms - self.ok_ms <= READY_S * 1000:
            return None
        since = "since start" if self.ok_ms is None else f"for {(now_ms - self.ok_ms) / 1000:.0f} s"
        return f"no successful read and commit {since}: {self.error or 'none tried yet'}"


def app(beat: Beat, registry: CollectorRegistry) -> Wsgi:
    """/healthz and /readyz from ``beat``; anything else, ``registry`` as /metrics."""
    metrics = make_wsgi_app(registry)

    def handle(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in HEALTH_PATHS:
            return metrics(environ, start_response)  # type: ignore[arg-type]
        problem = beat.problem(path, clock.now_ms())
        status = "200 OK" if problem is None else "503 Service Unavailable"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        start_response(status, headers)
        return [f"{problem or 'ok'}\n".encode()]

    return handle


class _Quiet(WSGIRequestHandler):
    """No line on stderr per request (probes come every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int, beat: Beat, registry: CollectorRegistry) -> WSGIServer:
    """Serve :func:`app` on ``host:port`` (0: any free port) in a daemon thread; stop it
    with ``shutdown()``."""
    server = make_server(host, port, app(beat, registry), ThreadingWSGIServer, _Quiet)
    threading.Thread(target=server.serve_forever, name="qoe-http", daemon=True).start()
    return server
