"""Several processes of one kind on one listening port (SO_REUSEPORT).

A Python process runs on one core at most, so one gateway and one playback process carried
every press play whatever the machine. A kind that declares ``workers``
(:class:`kernel.config.WorkersSettings`) runs as a group: the process started (the leader)
binds its port with SO_REUSEPORT, then starts ``workers - 1`` copies of its own command line
(followers), told the port it bound (so ``--port 0`` works too) and no metrics listener of
their own; each binds the same port with SO_REUSEPORT and the kernel spreads new connections
over the group's sockets. The leader announces itself only once every follower has (a
launcher that waits for the ready line finds the whole group serving), stops the followers
when it stops, and fails when one of them dies, so the supervisor (or the pod) sees the kind
fail instead of it running short without a word. Followers end with the leader however it
ends (:func:`kernel.processes.parent_death_signal`). After its ready line a follower's
stdout is still read (and logged), so that nothing it prints can fill the pipe and block it.

A scrape of /metrics reaches whichever worker the kernel hands the connection to (the
gateway's is on the shared port) or the leader alone (the services' ``--metrics-port``),
so each worker's own figures would tell only its share. A group therefore keeps its
figures in prometheus_client's multiprocess mode (:func:`shared_metrics`: one directory
per group, each worker's values in files there), and every worker exposes the sum of all
of them (:func:`kernel.rpc.resilience.metrics.exposed`). A group of one (the default) keeps
them in memory: the mode costs every update a ``getpid`` and an mmap write (about 6 us more
per counter increment or gauge set, measured), paid on every call for nothing to share.

Whatever a process keeps in memory is per worker; ``docs/architecture.md`` says, state by
state, why that stays correct with N of them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager

from kernel.config import ConfigError, WorkersSettings, load
from kernel.config.fields import flag_name
from kernel.processes import parent_death_signal

log = logging.getLogger(__name__)

FOLLOWER_ENV = "LIVEMESH_WORKER_OF"  # a follower's: its leader's pid (it starts no followers)
# prometheus_client's multiprocess mode: read when prometheus_client is first imported
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DRAIN_CHUNK = 1 << 16  # bytes of a follower's stdout read at once


class WorkerDied(RuntimeError):
    """A follower exited while its leader runs (or before it was ready)."""


def count(setting: int) -> int:
    """The group's size: the setting, or (0) one process per core this process may use."""
    return setting or len(os.sched_getaffinity(0))


def group_size(cls: type[WorkersSettings], argv: list[str]) -> int | None:
    """The size of the group a process of ``cls`` started with ``argv`` will run (its
    ``workers`` from the flag, the environment or the settings file), read before the
    process imports prometheus_client; None when a setting is bad (the process's own
    parser then says which)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(flag_name(cls.model_fields["workers"]) or "--workers", dest="workers")
    given = parser.parse_known_args(argv)[0].workers
    try:
        settings = load(cls, {} if given is None else {"workers": given}).settings
    except ConfigError:
        return None
    return count(settings.workers)


@contextmanager
def shared_metrics() -> Iterator[None]:
    """Run a kind that may have workers with its metrics in a directory of its group's own
    (removed after), which its followers inherit with its environment. Must come before
    ``prometheus_client`` is imported: the library picks its value store then. A directory
    already set (a follower's, from its leader; or the operator's) is used as it is."""
    if METRICS_DIR_ENV in os.environ:
        yield
        return
    path = tempfile.mkdtemp(prefix="livemesh-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    try:
        yield
    finally:
        del os.environ[METRICS_DIR_ENV]
        shutil.rmtree(path, ignore_errors=True)


def is_follower() -> bool:
    """Whether this process was started by a leader (so it starts none itself)."""
    return FOLLOWER_ENV in os.environ


def follower_command(port: int) -> list[str]:
    """This process's own command line, on ``port`` and without a metrics listener (one
    port per process: the leader's); later flags win over the earlier ones."""
    own = [sys.executable, *sys.orig_argv[1:]]
    return [*parent_death_signal(), *own, "--port", str(port), "--metrics-port", "0"]


class Group:
    """The followers a leader started (none in a follower or a group of one)."""

    def __init__(self, followers: list[asyncio.subprocess.Process]) -> None:
        self.followers = followers
        self.readers: list[asyncio.Task[None]] = []  # each follower's stdout, after ready

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.followers]

    async def serve(self, stopped: Awaitable[None]) -> None:
        """Return when ``stopped`` does (the process's SIGTERM); :class:`WorkerDied` when a
        follower exits first."""
        stop = asyncio.ensure_future(stopped)
        deaths = [asyncio.ensure_future(proc.wait()) for proc in self.followers]
        try:
            done, _ = await asyncio.wait([stop, *deaths], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, *deaths):
                task.cancel()
        if stop not in done:
            dead = next(p for p, d in zip(self.followers, deaths, strict=True) if d in done)
            raise WorkerDied(f"worker {dead.pid} exited with {dead.returncode}")

    def read_on(self) -> None:
        """Keep reading every follower's stdout (its ready line has been read)."""
        self.readers = [asyncio.create_task(_drain(proc)) for proc in self.followers]

    async def stop(self) -> None:
        """SIGTERM every follower (each drains as it would alone), SIGKILL stragglers."""
        for proc in self.followers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.followers:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self.readers:  # their pipes are at their end: nothing left unread
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


@asynccontextmanager
async def group(size: int, port: int) -> AsyncIterator[Group]:
    """Start this process's followers (``size`` processes in all, :func:`count`) on
    ``port`` (its own, bound with SO_REUSEPORT) and wait until each has said it is ready;
    stop them on the way out."""
    wanted = 0 if is_follower() else size - 1
    env = {**os.environ, FOLLOWER_ENV: str(os.getpid())}
    started = Group([])
    try:
        for _ in range(wanted):
            started.followers.append(
                await asyncio.create_subprocess_exec(
                    *follower_command(port), env=env, stdout=asyncio.subprocess.PIPE
                )
            )
        for proc in started.followers:
            await _ready(proc)
        started.read_on()
        yield started
    finally:
        await started.stop()


async def _ready(proc: asyncio.subprocess.Process) -> None:
    """Wait for a follower's ready line (``kind: address``, as every process prints)."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await proc.stdout.readline()
    except TimeoutError:
        raise WorkerDied(f"worker {proc.pid} not ready after {READY_TIMEOUT_S:.0f} s") from None
    if not line:
        raise WorkerDied(f"worker {proc.pid} exited with {await proc.wait()} before it was ready")
    log.debug("worker %d: %s", proc.pid, line.decode().strip())


async def _drain(proc: asyncio.subprocess.Process) -> None:
    """A follower's stdout to the log until it closes (read in chunks: a line of any
    length is read too)."""
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(DRAIN_CHUNK):
        for line in chunk.decode(errors="replace").splitlines():
            log.info("worker %d: %s", proc.pid, line)
