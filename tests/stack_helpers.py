"""Starting ``livemesh demo`` as a real process tree, the way a user does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kernel.processes import parent_death_signal
from kernel.procfs import cmdline, descendants

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    announced: dict[str, str] = field(default_factory=dict)

    @property
    def mpd_url(self) -> str:
        return self.announced["mpd"]


def process_env(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def stack_process(root: int, command: str) -> tuple[int, list[str]]:
    """The pid and arguments of the stack's ``livemesh COMMAND`` process."""
    for pid in descendants(root):
        args = cmdline(pid)
        if "command.cli" in args and args[args.index("command.cli") + 1] == command:
            return pid, args
    raise LookupError(command)


@contextmanager
def demo_stack(
    wait_for: tuple[str, ...] = ("mpd",),
    *,
    args: Sequence[str] | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
) -> Iterator[RunningStack]:
    """``livemesh demo ARGS`` (default: ``--free-ports`` and a run directory of its own, as a
    ``make demo`` may be running in the checkout's) on its own embedded Redis, in ``cwd``,
    with ``env`` (default: ours) less ``REDIS_URL``; stopped with SIGINT after."""
    scratch = Path(tempfile.mkdtemp(prefix="livemesh-demo-test-"))
    if args is None:
        args = ["--free-ports", "--run-dir", str(scratch / "run")]
    process = subprocess.Popen(  # ends with this run, even one its timeout cuts short
        [*parent_death_signal(), sys.executable, "-m", "command.cli", "demo", *args],
        cwd=cwd,
        env={k: v for k, v in (os.environ if env is None else env).items() if k != "REDIS_URL"},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stack = RunningStack(process)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the stack announces each URL once it answers
            line = line.strip()
            if line.endswith(".mpd") and line.startswith("http"):
                stack.announced["mpd"] = line
            elif re.fullmatch(r"[a-z0-9-]+: [a-z]+://\S+", line):
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
        shutil.rmtree(scratch, ignore_errors=True)


def run_loadtest(scenario: str, out: Path, *args: str, timeout_s: float) -> dict[str, Any]:
    """``livemesh loadtest run SCENARIO --out OUT ARGS`` with a stack of its own (its own
    embedded Redis; the viewers' rungs only, v480 and v360: encoding 720p too would take CPU
    from the players and the stack, which share this machine's two cores); its results
    document, and its output under ``"stdout"``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["LIVEMESH_RUNGS"] = "v480,v360"
    command = ["loadtest", "run", scenario, "--out", str(out), *args]
    run = subprocess.run(
        [*parent_death_signal(), sys.executable, "-m", "command.cli", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return {**results, "stdout": run.stdout}
