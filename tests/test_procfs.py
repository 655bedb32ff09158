"""/proc readers and the one process killer, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kernel import procfs
from kernel.processes import is_running, kill, send_signal, stop_processes, wait_exit

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child that has said it runs: past its exec (until then /proc shows no arguments)."""
    proc = subprocess.Popen(SLEEPER, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    yield proc
    stop_processes([proc], grace_s=1.0)
    proc.stdout.close()


def test_a_child_is_found_below_us_with_its_command_line(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert sleeper.pid in procfs.children(os.getpid())
    assert sleeper.pid in procfs.descendants(os.getpid())
    assert procfs.cmdline(sleeper.pid) == SLEEPER
    assert procfs.alive(sleeper.pid) and is_running(sleeper) and is_running(sleeper.pid)
    assert procfs.cwd(sleeper.pid) == os.getcwd()


def test_cpu_seconds_of_a_busy_process_and_of_a_gone_one() -> None:
    before = procfs.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # tens of milliseconds of CPU: a few clock ticks
    assert procfs.cpu_seconds(os.getpid()) > before
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert procfs.cpu_seconds(gone.pid) == 0.0 and procfs.cmdline(gone.pid) == []


def test_a_killed_child_is_reaped_and_an_unreaped_one_counts_as_gone(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert kill(sleeper)
    assert sleeper.returncode == -signal.SIGKILL and not is_running(sleeper)
    assert not send_signal(sleeper.pid, signal.SIGCONT)  # reaped: the pid is free
    zombie = subprocess.Popen(["true"])
    assert wait_exit(zombie.pid, 5.0)  # exited, not reaped by us yet
    assert not procfs.alive(zombie.pid) and not is_running(zombie.pid)
    zombie.wait()


def test_wait_exit_times_out_on_a_live_process(sleeper: subprocess.Popen[bytes]) -> None:
    assert not wait_exit(sleeper.pid, 0.05)
    assert send_signal(sleeper.pid, signal.SIGTERM)
    assert wait_exit(sleeper.pid, 5.0)
