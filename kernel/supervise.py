"""Runs a topology file (``deploy/local.toml`` by default) as supervised child processes.

Redis comes first (the embedded one unless ``REDIS_URL`` is set), then every
process in the file's order, each waited for when it declares a readiness URL.
SIGINT or SIGTERM stops everything, children first, and leaves no process behind.
A process marked ``restart = true`` (a channel's redundant pipelines) is started again
when it dies, after a backoff that doubles with each crash in a row (bounded); any other
dying stops the stack.
A private CA is made at start (:class:`kernel.rpc.tls.PrivateCA`), each process that asks
for TLS files in ``[env]`` gets its own certificate, and the CA's directory is deleted at exit.

There are no default keys: URL-token keys and the credential key are the configured ones,
else made for the run (:func:`run_keys`), and the demo says so. What an operator needs to
reach the running demo (the CA, an operator client certificate and key, the credential key)
is in its run directory (``var/demo`` by default, 0700), removed at exit.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.config import DEFAULT_TOPOLOGY as DEFAULT_TOPOLOGY  # the default of run()'s callers
from kernel.config import ConfigError, TokenSettings, load
from kernel.ports import free_port
from kernel.processes import parent_death_signal, stop_processes
from kernel.redis_server import EmbeddedRedis, check_redis, configured_redis_url
from kernel.rpc import credentials
from kernel.rpc.tls import PrivateCA
from kernel.tokens import TokenSigner, new_keys

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PLACEHOLDER = re.compile(
    r"\{(redis_url|port:[a-z0-9_-]+|token:[^}]+|tls:(?:ca|cert|key)"
    r"|credential:[a-z]+:[a-z0-9_-]+)\}"
)
DEMO_TOKEN_TTL_S = 86_400
TOKEN_KEYS_ENV = "LIVEMESH_TOKEN_KEYS"
RUN_LOCK = ".lock"  # held (flock) by the demo that owns a run directory
CREDENTIAL_FILE = "credential.key"
OPERATOR = "operator"  # the name of the operator's client certificate (grpcurl)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    args: list[str]
    ready: str | None
    env: dict[str, str] = field(default_factory=dict)  # [env] and its own, filled for it
    restart: bool = False  # started again when it dies, instead of stopping the stack
    # the stack outlives its exit (`expendable = true`: an edge, which players are steered
    # around, killed on purpose by a failover test)
    expendable: bool = False


@dataclass
class Backoff:
    """How long a restartable process waits before its next start: ``first_s`` after a
    crash, doubled for each crash in a row up to ``cap_s``; a run of ``steady_s`` or more
    forgets the earlier crashes. A process that crashes at once cannot spin a core."""

    first_s: float = 1.0
    cap_s: float = 30.0
    steady_s: float = 60.0
    crashes: int = 0

    def delay(self, ran_s: float) -> float:
        """The wait before restarting a process that ran ``ran_s`` before it died."""
        if ran_s >= self.steady_s:
            self.crashes = 0
        wait: float = min(self.cap_s, self.first_s * 2.0**self.crashes)
        self.crashes += 1
        return wait


@dataclass(frozen=True)
class Announcement:
    """A URL to print once ``ready`` (by default the URL itself) answers 200."""

    url: str
    ready: str


@dataclass(frozen=True)
class Topology:
    processes: list[ProcessSpec]
    announce: dict[str, Announcement]


@dataclass(frozen=True)
class RunKeys:
    """The keys one run of a stack signs with; ``made`` names the settings that were unset
    (their keys were made for this run only and are worthless once it stops)."""

    token_keys: str
    credential: Ed25519PrivateKey
    made: tuple[str, ...] = ()


def run_keys(credential_file: Path | None = None) -> RunKeys:
    """The configured URL-token keys and credential key, each made afresh when unset (no
    default keys). With ``credential_file`` the credential key is there for an operator to
    mint with: a made key written to it (0600), a configured one linked from it."""
    made = []
    token_keys = load(TokenSettings).settings.token_keys
    if not token_keys:
        token_keys, made = new_keys(), [TOKEN_KEYS_ENV]
    try:
        credential = credentials.signing_key_from_env()
        if credential_file is not None:
            credential_file.symlink_to(Path(os.environ[credentials.KEY_FILE_ENV]).resolve())
    except credentials.MissingKey:
        made.append(credentials.KEY_FILE_ENV)
        credential = (
            Ed25519PrivateKey.generate()
            if credential_file is None
            else credentials.write_new_key(credential_file)
        )
    return RunKeys(token_keys, credential, tuple(made))


def load_topology(
    path: Path,
    redis_url: str,
    free_ports: bool,
    ca: PrivateCA | None = None,
    keys: RunKeys | None = None,
) -> Topology:
    """Read the topology file and fill in every placeholder: ``{tls:…}`` with ``ca``'s files
    for the process whose environment it is; ``{token:…}`` and ``{credential:ROLE:NAME}``
    signed with ``keys`` (default: :func:`run_keys`). Every process is given the URL-token
    keys and the credential key's public half to verify with. A process's environment is
    ``[env]`` and its own ``[process.env]``."""
    raw = tomllib.loads(path.read_text())
    keys = keys or run_keys()
    signer = TokenSigner.from_spec(keys.token_keys)
    private = keys.credential
    public = {
        credentials.PUBLIC_KEY_ENV: credentials.public_pem(private),
        TOKEN_KEYS_ENV: keys.token_keys,
    }
    ports = {
        name: free_port() if free_ports else int(p) for name, p in raw.get("ports", {}).items()
    }

    def fill(text: str, process: str | None = None) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "redis_url":
                return redis_url
            kind, name = key.split(":", 1)
            if kind == "token":
                return signer.sign(name, session="demo", ttl_s=DEMO_TOKEN_TTL_S)
            if kind == "tls":
                if ca is None or process is None:
                    raise ValueError(f"{{{key}}}: only in [env], with a private CA")
                return str(getattr(ca.issue(process), name))
            if kind == "credential":
                role, subject = name.split(":", 1)
                return credentials.mint(private, role, subject, DEMO_TOKEN_TTL_S)
            return str(ports[name])

        return PLACEHOLDER.sub(value, text)

    def env_of(process: dict[str, Any]) -> dict[str, str]:
        entries = {**raw.get("env", {}), **process.get("env", {})}
        return {**public, **{name: fill(v, process["name"]) for name, v in entries.items()}}

    processes = [
        ProcessSpec(
            p["name"],
            [fill(a) for a in p["args"]],
            fill(p["ready"]) if "ready" in p else None,
            env_of(p),
            bool(p.get("restart", False)),
            bool(p.get("expendable", False)),
        )
        for p in raw["process"]
    ]
    announce = {
        label: Announcement(fill(entry), fill(entry))
        if isinstance(entry, str)
        else Announcement(fill(entry["url"]), fill(entry["ready"]))
        for label, entry in raw.get("announce", {}).items()
    }
    return Topology(processes, announce)


def wait_ready(url: str, stop: threading.Event, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Wait until ``url`` answers 200; the processes give no other readiness signal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        stop.wait(0.1)
    return False


def child_command(spec: ProcessSpec) -> list[str]:
    """The command line of a stack process (it ends with the supervisor, however that ends)."""
    return [*parent_death_signal(), sys.executable, "-m", "command.cli", *spec.args]


def child_env(spec: ProcessSpec) -> dict[str, str]:
    """A stack process's environment: ours and its own; never the credential key (the
    children verify with its public half; only the supervisor mints)."""
    merged = {**os.environ, **spec.env}
    merged.pop(credentials.KEY_FILE_ENV, None)
    return merged


class Stack:
    """The running children of one ``livemesh demo``."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = threading.Event()
        self._backoff = backoff or Backoff()  # the policy each restartable child starts with
        self._restartable: dict[str, ProcessSpec] = {}
        self._expendable: set[str] = set()  # names of children the stack outlives
        self._started: dict[str, float] = {}
        self._backoffs: dict[str, Backoff] = {}
        self._due: dict[str, float] = {}  # when a dead restartable child starts again

    def start(self, spec: ProcessSpec) -> None:
        self.children.append((spec.name, self._spawn(spec)))
        if spec.restart:
            self._restartable[spec.name] = spec
        if spec.expendable:
            self._expendable.add(spec.name)

    def _spawn(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        # a child's own ready line on stdout ("gateway: http://…", for launchers that read
        # the port it bound) would come before it answers and repeat what the supervisor
        # announces once it does; its log (stderr) stays on the terminal
        self._started[spec.name] = time.monotonic()
        return subprocess.Popen(child_command(spec), env=child_env(spec), stdout=subprocess.DEVNULL)

    def tend(self) -> str | None:
        """Restart each dead restartable child once its backoff has passed; the name of the
        first dead child that may not be restarted (the stack must stop), else None."""
        now = time.monotonic()
        for i, (name, proc) in enumerate(self.children):
            if proc.poll() is None:
                continue
            spec = self._restartable.get(name)
            if spec is None:
                if name in self._expendable:
                    continue
                return name
            due = self._due.get(name)
            if due is None:
                backoff = self._backoffs.setdefault(name, replace(self._backoff))
                wait = backoff.delay(now - self._started[name])
                self._due[name] = now + wait
                print(f"livemesh demo: {name} exited ({proc.returncode}); restarting in "
                      f"{wait:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
            elif now >= due and not self.stopping.is_set():
                del self._due[name]
                self.children[i] = (name, self._spawn(spec))
        return None

    def stop(self) -> None:
        """SIGTERM every child, newest first; SIGKILL any still alive after the grace period."""
        self.stopping.set()
        stop_processes([proc for _name, proc in reversed(self.children)], STOP_TIMEOUT_S)


def claim_run_dir(path: Path) -> int:
    """Make ``path`` this demo's private directory (0700) and lock it; the lock's descriptor.
    A directory left by a demo that was killed is emptied; one another demo holds, or one
    that is not a demo's, is refused (:class:`ConfigError`)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = path / RUN_LOCK
    if not lock.exists() and any(path.iterdir()):
        raise ConfigError(f"run directory {path} is not empty and not a demo's")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another livemesh demo runs in {path}: give --run-dir") from None
    for left in path.iterdir():
        if left.name != RUN_LOCK:
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left)
            else:
                left.unlink()
    path.chmod(0o700)
    return fd


def release_run_dir(path: Path, fd: int) -> None:
    """Delete the run directory, keys and all, then let the lock go."""
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)


def run(topology_path: Path, free_ports: bool, run_dir: Path) -> int:
    try:
        lock = claim_run_dir(run_dir)
    except (ConfigError, OSError) as exc:
        print(f"livemesh demo: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        return _run(topology_path, free_ports, run_dir)
    finally:
        release_run_dir(run_dir, lock)


def _run(topology_path: Path, free_ports: bool, run_dir: Path) -> int:
    keys = run_keys(run_dir / CREDENTIAL_FILE)
    if keys.made:
        print(
            f"livemesh demo: {' and '.join(keys.made)} not set: keys made for this run only",
            file=sys.stderr,
            flush=True,
        )
    if configured := configured_redis_url():
        try:
            check_redis(configured)
        except ConfigError as exc:
            return _fail(str(exc), code=2)
    embedded = None if configured else EmbeddedRedis()
    redis_url = configured or embedded.start()  # type: ignore[union-attr]
    stack = Stack()
    ca = PrivateCA(directory=run_dir / "tls")
    ca.issue(OPERATOR)  # a client certificate for command-line tools (grpcurl)
    print(f"livemesh demo: TLS files in {ca.directory}", file=sys.stderr, flush=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stack.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        topology = load_topology(topology_path, redis_url, free_ports, ca, keys)
        return _supervise(stack, topology)
    finally:
        stack.stop()
        ca.close()
        if embedded is not None:
            embedded.stop()


def _supervise(stack: Stack, topology: Topology) -> int:
    for spec in topology.processes:
        stack.start(spec)
        if spec.ready and not wait_ready(spec.ready, stack.stopping):
            return 0 if stack.stopping.is_set() else _fail(f"{spec.name} did not become ready")
    for label, announced in topology.announce.items():
        if not wait_ready(announced.ready, stack.stopping):
            return 0 if stack.stopping.is_set() else _fail(f"{announced.ready} did not answer")
        url = announced.url
        print(url if label == "mpd" else f"{label}: {url}", flush=True)
    while not stack.stopping.wait(0.5):  # children give no exit event to wait on together
        if dead := stack.tend():
            return _fail(f"{dead} exited; stopping the stack")
    return 0


def _fail(reason: str, code: int = 1) -> int:
    print(f"livemesh demo: {reason}", file=sys.stderr, flush=True)
    return code
