"""The README's commands, run verbatim against a demo this module starts; and no secret in
any of that demo's logs.

Ports: the README names the demo's fixed ports (``deploy/local.toml``'s ``[ports]``), which
another demo or test on the machine may hold. So the demo runs a copy of that topology
whose ports are free ones chosen here, and in each README command every
``127.0.0.1:<README port>`` becomes ``127.0.0.1:<the port chosen for that process>``; that
substitution is the only change made to a command.

Paths: the demo and the commands run in a scratch directory laid out like a checkout:
``.venv`` is this interpreter's environment and ``var/demo`` is the demo's default run
directory, so ``.venv/bin/livemesh``, ``.venv/bin/grpcurl`` and ``var/demo/...`` resolve as
in the README. The demo starts with no keys configured (no ``LIVEMESH_TOKEN_KEYS``, no
``LIVEMESH_CREDENTIAL_KEY_FILE``): the keys it makes are the ones used.

Every ``sh`` block is either run (its exit status and output checked) or made of commands
listed in :data:`NOT_RUN_HERE` with the reason and a cheaper check of their existence; a
block that is neither fails the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from kernel.config import DEFAULT_TOPOLOGY
from kernel.ports import free_port
from kernel.rpc import credentials
from kernel.supervise import CREDENTIAL_FILE, TOKEN_KEYS_ENV
from kernel.tokens import parse_keys
from livemesh.channels.v1 import channels_pb2, channels_pb2_grpc
from tests.stack_helpers import ROOT, RunningStack, demo_stack, process_env, stack_process

README = ROOT / "README.md"
COMMAND_TIMEOUT_S = 60
# commands the suite cannot run, with the reason and the argv of a check that they exist
NOT_RUN_HERE: dict[str, tuple[str, list[str]]] = {
    "make demo": (
        "runs until Ctrl-C; this module runs its `livemesh demo`",
        ["make", "-n", "demo"],
    ),
    "make test": ("the suite itself (it would run this test again)", ["make", "-n", "test"]),
    "make setup": ("builds .venv, which the suite already runs in", ["make", "-n", "setup"]),
    ".venv/bin/livemesh loadtest run fight-night": (
        "410 s with 2,000 viewers, longer than the whole suite",
        [".venv/bin/livemesh", "loadtest", "run", "--help"],
    ),
    ".venv/bin/livemesh loadtest run fight-night --viewers 0.5": (
        "410 s with 1,000 viewers, longer than the whole suite",
        [".venv/bin/livemesh", "loadtest", "run", "--help"],
    ),
}
# settings the demo must find unset, so it makes its own keys (and nothing reaches it from us)
UNSET = (
    "REDIS_URL",
    TOKEN_KEYS_ENV,
    credentials.KEY_FILE_ENV,
    credentials.PUBLIC_KEY_ENV,
    "LIVEMESH_TLS_CA",
    "LIVEMESH_TLS_CERT",
    "LIVEMESH_TLS_KEY",
)


def sh_blocks(text: str) -> list[str]:
    """The README's ```sh blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def commands_of(block: str) -> list[str]:
    """A block's command lines, each without its trailing comment."""
    lines = (line.split("  #", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Demo:
    stack: RunningStack
    home: Path  # the scratch checkout: .venv, var/demo
    ports: dict[int, int]  # README port -> this demo's
    stderr: Path  # the demo's and every child's stderr
    env: dict[str, str]  # what the README's commands run with

    def substituted(self, command: str) -> str:
        return re.sub(
            r"127\.0\.0\.1:(\d+)",
            lambda m: f"127.0.0.1:{self.ports.get(int(m.group(1)), int(m.group(1)))}",
            command,
        )

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (ports substituted) with bash, as a reader pastes it."""
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", self.substituted(script)],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )


def topology_on_free_ports(target: Path) -> dict[int, int]:
    """``deploy/local.toml`` written to ``target`` with a free port for each; the map."""
    text = DEFAULT_TOPOLOGY.read_text()
    ports: dict[int, int] = {}
    for name, port in tomllib.loads(text)["ports"].items():
        ports[port] = free_port()
        text, count = re.subn(rf"^{name} = {port}$", f"{name} = {ports[port]}", text, flags=re.M)
        assert count == 1, name
    target.write_text(text)
    return ports


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with tempfile.TemporaryDirectory(prefix="livemesh-readme-") as scratch:
        home = Path(scratch)
        (home / ".venv").symlink_to(Path(sys.prefix))
        ports = topology_on_free_ports(home / "topology.toml")
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env["PYTHONPATH"] = str(ROOT)  # this tree's code, whichever checkout .venv came from
        stderr_path = home / "demo.stderr"
        with stderr_path.open("wb") as stderr:
            args = ["--topology", str(home / "topology.toml")]
            with demo_stack(("gateway",), args=args, cwd=home, env=env, stderr=stderr) as stack:
                yield Demo(stack, home, ports, stderr_path, env)


def test_every_readme_sh_block_runs_or_is_accounted_for(demo: Demo) -> None:
    blocks = sh_blocks(README.read_text())
    ran = 0
    for block in blocks:
        commands = commands_of(block)
        if all(command in NOT_RUN_HERE for command in commands):
            for command in commands:
                check_not_run_here(demo, command)
            continue
        done = demo.sh(block)
        assert done.returncode == 0, (block, done.stdout, done.stderr)
        check_output(demo, block, done.stdout)
        ran += 1
    assert ran >= 4, "the press-play, operator, broadcaster and config blocks"


def check_not_run_here(demo: Demo, command: str) -> None:
    reason, check = NOT_RUN_HERE[command]
    cwd = ROOT if check[0] == "make" else demo.home
    done = subprocess.run(check, cwd=cwd, env=demo.env, capture_output=True, text=True)
    assert done.returncode == 0, (command, reason, done.stderr)
    if "fight-night" in command:
        assert (ROOT / "loadrig" / "scenarios" / "fight-night.toml").exists()
        assert "--viewers" in done.stdout


def json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents written one after another in ``text``."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        at = len(text) - len(text[at:].lstrip())
    return found


def check_output(demo: Demo, block: str, out: str) -> None:
    """What each block's reader expects to see."""
    if "playback:start" in block:
        started = json_documents(out)[-1]  # curl prints each answer without a newline
        url = started["session"]["manifestUrls"][0]["url"]
        assert "/t/" in url
        with urllib.request.urlopen(url, timeout=10) as mpd:  # the signed URL plays
            assert b"<MPD" in mpd.read()
    elif "grpcurl" in block:
        assert "livemesh.channels.v1.ChannelService" in out
        assert '"name": "channels/demo"' in out
        assert '"streamKey":' in out
    elif "livemesh experiments" in block:
        assert '"state": "EXPERIMENT_STATE_RUNNING"' in out
        assert "experiments/live-delay-1 (EXPERIMENT_STATE_RUNNING)" in out
        assert re.search(r"^control +1 ", out, re.M) and re.search(r"^fast +1 ", out, re.M)
        assert "sample ratio: " in out
    elif "rtmp://" in block:  # the broadcaster's walk: the pushed channel is live
        assert json.loads(out)["channel"]["state"] == "CHANNEL_STATE_LIVE", out
    elif "config show edge" in block:
        assert re.search(r"token_keys\s+<unset>", out), out
        assert "cache_bytes" in out
    else:
        raise AssertionError(f"no expectation for a README block: {block}")


def test_the_demo_said_it_made_its_keys(demo: Demo) -> None:
    said = demo.stderr.read_text(errors="replace")
    assert f"{TOKEN_KEYS_ENV} and {credentials.KEY_FILE_ENV} not set" in said
    assert "keys made for this run only" in said
    run_dir = demo.home / "var" / "demo"
    assert run_dir.stat().st_mode & 0o777 == 0o700
    assert (run_dir / CREDENTIAL_FILE).stat().st_mode & 0o777 == 0o600
    for name in ("ca.crt", "operator.crt", "operator.key"):
        assert (run_dir / "tls" / name).exists()


def secrets_of_a_session(demo: Demo) -> dict[str, str]:
    """Sign up, sign in, press play; create a channel and rotate its stream key as an
    operator: each secret that went by, by name."""
    gateway = demo.stack.announced["gateway"]
    password = "correct horse battery staple 7f3a"
    account = {"email": "secret-keeper@example.org", "password": password}
    post(gateway + "/v1/accounts:signUp", account)
    access_token = str(post(gateway + "/v1/accounts:signIn", account)["accessToken"])
    post(gateway + "/v1/playback:start", {"content": "titles/demo"}, access_token)

    run_dir = demo.home / "var" / "demo"
    key = credentials.load_private_key(run_dir / CREDENTIAL_FILE)
    operator = credentials.mint(key, credentials.OPERATOR, "secret-keeper")
    tls = run_dir / "tls"
    channel_creds = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(), (tls / "operator.key").read_bytes(),
        (tls / "operator.crt").read_bytes(),
    )  # fmt: skip
    target = f"127.0.0.1:{demo.ports[50058]}"
    auth = (("authorization", f"Bearer {operator}"),)
    with grpc.secure_channel(target, channel_creds) as channel:
        stub = channels_pb2_grpc.ChannelServiceStub(channel)
        stub.CreateChannel(
            channels_pb2.CreateChannelRequest(
                channel_id="secrets", channel=channels_pb2.Channel(display_name="Secrets")
            ),
            metadata=auth,
            timeout=10,
        )
        rotated = stub.RotateStreamKey(
            channels_pb2.RotateStreamKeyRequest(name="channels/secrets"), metadata=auth, timeout=10
        )
    playback, _ = stack_process(demo.stack.process.pid, "playback")
    token_keys = process_env(playback)[TOKEN_KEYS_ENV]
    key_pem = (run_dir / CREDENTIAL_FILE).read_text()
    return {
        "password": password,
        "access token": access_token,
        "operator credential": operator,
        "stream key": rotated.stream_key,
        "URL-token keys": token_keys,
        **{f"URL-token key {kid}": secret.hex() for kid, secret in parse_keys(token_keys).items()},
        "credential key": "".join(key_pem.splitlines()[1:-1]),
        **{f"credential key line {i}": line for i, line in enumerate(key_pem.splitlines()[1:-1])},
    }


def post(url: str, body: dict[str, str], token: str = "") -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.load(response)
        return answer


def test_no_secret_in_any_log(demo: Demo) -> None:
    secrets = secrets_of_a_session(demo)
    assert all(len(value) >= 16 for value in secrets.values()), "each worth looking for"
    logged = demo.stderr.read_text(errors="replace")
    # every process's stderr is here: the supervisor's, the gateway's access log of the calls
    assert "TLS files in" in logged and "POST /v1/accounts:signUp" in logged
    leaked = [name for name, value in secrets.items() if value in logged]
    assert not leaked, f"in the demo's logs: {', '.join(leaked)}"
