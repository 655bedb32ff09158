"""Starting ``livemesh demo`` as a real process tree, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    announced: dict[str, str] = field(default_factory=dict)

    @property
    def mpd_url(self) -> str:
        return self.announced["mpd"]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (
                (task / "children").read_text().split() if (task / "children").exists() else []
            )
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@contextmanager
def demo_stack(wait_for: tuple[str, ...] = ("mpd",)) -> Iterator[RunningStack]:
    """``livemesh demo --free-ports`` on its own embedded Redis; stopped with SIGINT after."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "livemesh.cli", "demo", "--free-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    stack = RunningStack(process)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the stack announces each URL once it answers
            line = line.strip()
            if line.endswith(".mpd") and line.startswith("http"):
                stack.announced["mpd"] = line
            elif ": http" in line:
                label, url = line.split(": ", 1)
                stack.announced[label] = url
            if all(label in stack.announced for label in wait_for):
                break
        assert all(label in stack.announced for label in wait_for), "the stack did not start"
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(2)  # SIGINT, as Ctrl-C
            process.wait(timeout=30)
