"""Children end with the process that started them, even one killed outright (a test run
ended by its timeout, a ``kill -9`` of ``livemesh demo``): the embedded Redis and every
process of a stack."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

KILL_SELF = """
with open(sys.argv[1], "w") as out:
    out.write(str(child.pid))
os.kill(os.getpid(), signal.SIGKILL)  # no chance to stop the child
"""
STARTERS = {
    "embedded redis": """
import os, signal, sys
from kernel.redis_server import EmbeddedRedis
server = EmbeddedRedis()
server.start()
child = server._process
""",
    "stack process": """
import os, signal, sys
from kernel.supervise import ProcessSpec, Stack
stack = Stack()
stack.start(ProcessSpec("registry", ["registry", "--port", "0"], None))
child = stack.children[0][1]
""",
}


@pytest.mark.parametrize("starter", list(STARTERS))
def test_a_killed_starter_takes_its_child_with_it(starter: str, tmp_path: Path) -> None:
    # the child's pid comes back in a file: a pipe would stay open as long as the child
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c", STARTERS[starter] + KILL_SELF, str(pid_file)]
    run = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert run.returncode == -9
    pid = int(pid_file.read_text())
    try:
        exited = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    try:
        ready, _, _ = select.select([exited], [], [], 10.0)  # readable once the process ends
    finally:
        os.close(exited)
    if not ready:
        os.kill(pid, 9)
    assert ready, f"the {starter} outlived the process that started it"
