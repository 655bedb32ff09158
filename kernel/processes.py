"""Processes, the same way everywhere: children end with their parent and are stopped with
SIGTERM, a grace period, then SIGKILL; any process (ours or found in /proc) is signalled,
checked and awaited through one set of functions (the chaos actions, the fault injector's
killer)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from kernel import procfs


def parent_death_signal() -> list[str]:
    """A command prefix that has the kernel send SIGTERM to the child when its parent dies
    (``setpriv``, from util-linux on every Debian, sets PR_SET_PDEATHSIG and execs the
    command); none without ``setpriv``.

    Without it, children outlived a parent killed outright (a test run ended by its
    timeout, a ``kill -9`` of ``livemesh demo``), holding ports and Redis sockets. The
    kernel's signal follows the thread that started the child: every caller here starts
    its children from its main thread, which lives as long as they should.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM every live process in the order given, then reap them, killing stragglers.

    The grace period is shared: all of them get ``grace_s`` together, not each.
    """
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# A process to act on: our own child (a Popen, which must also be reaped) or any pid (a
# process another parent started, found in /proc).
Target = subprocess.Popen[Any] | int


def pid_of(target: Target) -> int:
    return target if isinstance(target, int) else target.pid


def is_running(target: Target) -> bool:
    """Whether ``target`` has not exited (a child is asked through its Popen, which reaps
    it; any other pid through /proc, where an exited one lingers as a zombie)."""
    return procfs.alive(target) if isinstance(target, int) else target.poll() is None


def send_signal(target: Target, sig: int) -> bool:
    """Send ``sig`` to ``target``; False when it was already gone."""
    try:
        os.kill(pid_of(target), sig)
    except ProcessLookupError:
        return False
    return True


def kill(target: Target, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` (SIGKILL: a crash, not a graceful stop) and, for our own child, wait
    for it to end, so that it leaves no zombie; False when it was already gone."""
    sent = send_signal(target, sig)
    if not isinstance(target, int):
        target.wait()
    return sent


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``pid`` (not necessarily our child) to exit; whether
    it did.  The kernel says when through a pidfd, so nothing polls /proc."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poll = select.poll()  # not select.select: a busy process's fds pass its 1024 limit
        poll.register(fd, select.POLLIN)
        return bool(poll.poll(timeout_s * 1000))
    finally:
        os.close(fd)
