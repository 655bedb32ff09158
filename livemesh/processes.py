"""Child processes, the same way everywhere: they end with their parent, and are stopped
with SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence


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
