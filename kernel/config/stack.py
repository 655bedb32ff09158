"""Settings of the processes that run others: the demo supervisor and the load rig."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from kernel.config.base import ProcessSettings, RedisSettings, TokenSettings
from kernel.config.fields import setting
from kernel.config.trust import CredentialSettings

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "deploy" / "local.toml"


class DemoSettings(CredentialSettings, RedisSettings, TokenSettings):
    """``livemesh demo``: a synchronous supervisor (no event loop, no log of its own) that
    mints its processes' credentials with the credential key (a fresh one when unset)."""

    kind: ClassVar[str] = "demo"
    redis_url: str | None = setting(
        None, env="REDIS_URL", help="the Redis server (unset: an embedded redis-server)"
    )
    topology: Path = setting(
        DEFAULT_TOPOLOGY, flag="--topology", help="the topology file of processes to run"
    )
    free_ports: bool = setting(False, flag="--free-ports", help="use free ports, not the file's")
    run_dir: Path = setting(
        Path("var/demo"),
        flag="--run-dir",
        help="private directory (0700, removed at exit) of the run's CA, operator client "
        "certificate and credential key",
    )


class LoadtestSettings(ProcessSettings):
    """``livemesh loadtest``: the player workers' loop and an attached stack's faults."""

    kind: ClassVar[str] = "loadtest"
    workers: int = setting(0, flag="--workers", ge=0, help="player processes (0: one per core)")
    faults_file: str | None = setting(
        None,
        env="LIVEMESH_FAULTS_FILE",
        flag="--faults-file",
        help="with --attach: the stack's fault rules file",
    )
