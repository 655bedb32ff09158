"""No default secrets: a process that signs or verifies URL tokens refuses to start without
keys, naming the setting; the demo makes its own, in a private run directory only it holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.config import ConfigError
from kernel.rpc import credentials
from kernel.supervise import (
    CREDENTIAL_FILE,
    RUN_LOCK,
    TOKEN_KEYS_ENV,
    claim_run_dir,
    release_run_dir,
    run_keys,
)
from tests.stack_helpers import ROOT


def keyless_env() -> dict[str, str]:
    """Our environment without URL-token keys or a settings file that could hold them."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_KEYS_ENV}
    return env | {"LIVEMESH_SETTINGS": ""}


@pytest.mark.parametrize(
    ("command", "named"),
    [
        (["edge", "--port", "0", "--parent", "http://127.0.0.1:9"], "--token-keys"),
        (["playback", "--port", "0"], TOKEN_KEYS_ENV),
    ],
)
def test_who_signs_or_verifies_url_tokens_refuses_to_start_without_keys(
    command: list[str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "command.cli", *command],
        cwd=ROOT,
        env=keyless_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert TOKEN_KEYS_ENV in done.stderr and named in done.stderr
    assert "Traceback" not in done.stderr


def test_a_shield_without_tokens_needs_no_keys() -> None:
    from edge.main import node_config
    from kernel.config import EdgeSettings, load

    flags = {"no_tokens": True, "parent": ["http://127.0.0.1:9"]}
    settings = load(EdgeSettings, flags, keyless_env()).settings
    assert node_config(settings).token_keys is None
    with pytest.raises(ConfigError, match=TOKEN_KEYS_ENV):
        node_config(settings.model_copy(update={"no_tokens": False}))


def test_the_demo_makes_keys_only_for_what_is_not_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEMESH_SETTINGS", "")
    monkeypatch.delenv(TOKEN_KEYS_ENV, raising=False)
    monkeypatch.delenv(credentials.KEY_FILE_ENV, raising=False)
    made = run_keys(tmp_path / "made.key")
    assert made.made == (TOKEN_KEYS_ENV, credentials.KEY_FILE_ENV)
    assert (tmp_path / "made.key").stat().st_mode & 0o777 == 0o600
    assert credentials.load_private_key(tmp_path / "made.key").public_key() == (
        made.credential.public_key()
    )
    assert run_keys().token_keys != made.token_keys  # fresh each run

    monkeypatch.setenv(TOKEN_KEYS_ENV, "k1:" + "11" * 32)
    monkeypatch.setenv(credentials.KEY_FILE_ENV, str(tmp_path / "made.key"))
    configured = run_keys(tmp_path / "linked.key")
    assert configured.made == () and configured.token_keys == "k1:" + "11" * 32
    assert (tmp_path / "linked.key").resolve() == (tmp_path / "made.key").resolve()


def test_a_run_directory_is_private_held_by_one_demo_and_gone_after(tmp_path: Path) -> None:
    run_dir = tmp_path / "var" / "demo"
    lock = claim_run_dir(run_dir)
    assert run_dir.stat().st_mode & 0o777 == 0o700
    (run_dir / CREDENTIAL_FILE).write_text("key")
    with pytest.raises(ConfigError, match="another livemesh demo"):
        claim_run_dir(run_dir)
    assert (run_dir / CREDENTIAL_FILE).exists()  # the running demo's files stay
    release_run_dir(run_dir, lock)
    assert not run_dir.exists()


def test_a_killed_demos_run_directory_is_emptied_and_a_foreign_one_refused(
    tmp_path: Path,
) -> None:
    left = tmp_path / "left"
    (left / "tls").mkdir(parents=True)
    (left / RUN_LOCK).touch()  # no demo holds it: its demo was killed
    (left / CREDENTIAL_FILE).write_text("old key")
    lock = claim_run_dir(left)
    assert sorted(p.name for p in left.iterdir()) == [RUN_LOCK]
    release_run_dir(left, lock)

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo's"):
        claim_run_dir(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
