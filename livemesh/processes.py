"""Stopping child processes the same way everywhere: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence


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
