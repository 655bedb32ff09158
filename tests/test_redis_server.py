"""The embedded Redis ends with the process that started it, even one killed outright."""

from __future__ import annotations

import os
import select
import subprocess
import sys

STARTER = """
import os, signal
from livemesh.redis_server import EmbeddedRedis
server = EmbeddedRedis()
server.start()
print(server._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no chance to stop the server
"""


def test_a_killed_starter_takes_its_redis_server_with_it() -> None:
    starter = subprocess.run([sys.executable, "-c", STARTER], capture_output=True, timeout=60)
    pid = int(starter.stdout)
    assert starter.returncode == -9
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
    assert ready, "the redis-server outlived the process that started it"
