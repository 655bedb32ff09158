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
ends (:func:`kernel.processes.parent_death_signal`).

Whatever a process keeps in memory is per worker; ``docs/architecture.md`` says, state by
state, why that stays correct with N of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from kernel.processes import parent_death_signal

log = logging.getLogger(__name__)

FOLLOWER_ENV = "LIVEMESH_WORKER_OF"  # a follower's: its leader's pid (it starts no followers)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class WorkerDied(RuntimeError):
    """A follower exited while its leader runs (or before it was ready)."""


def count(setting: int) -> int:
    """The group's size: the setting, or (0) one process per core this process may use."""
    return setting or len(os.sched_getaffinity(0))


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
