"""kernel/config: four layers in order, validation that names the key, and
``livemesh config show`` run as the real command."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kernel import loop
from kernel.config import (
    KINDS,
    CatalogSettings,
    ChannelsSettings,
    ConfigError,
    EdgeSettings,
    LoadtestSettings,
    RegistrySettings,
    given_flags,
    load,
    parse,
)
from kernel.config.load import DEFAULT_FILE, SETTINGS_ENV
from kernel.config.trust import CREDENTIAL_KEY_FILE_ENV as KEY_FILE_ENV
from kernel.config.trust import NODE_CREDENTIAL_ENV
from kernel.rpc.resilience.faults import FAULTS_FILE_ENV as FAULTS
from kernel.rpc.tls import CA_ENV, CERT_ENV, KEY_ENV, TlsPaths, tls_settings
from loadrig.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def settings_file(tmp_path: Path, text: str) -> dict[str, str]:
    """An environment whose settings file holds ``text``."""
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return {SETTINGS_ENV: str(path)}


def livemesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real ``livemesh`` command, with only ``env`` beyond PATH and PYTHONPATH."""
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "command.cli", *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    env = settings_file(
        tmp_path,
        '[all]\nhost = "10.0.0.1"\nmax_concurrent_rpcs = 10\nlog_level = "WARNING"\n'
        "[catalog]\nport = 1001\nmax_concurrent_rpcs = 11\n",
    )
    env |= {"LIVEMESH_CATALOG_PORT": "1002", "LIVEMESH_HOST": "10.0.0.2"}
    loaded = load(CatalogSettings, {"port": "1003"}, env)
    settings, sources = loaded.settings, loaded.sources
    file = f"file {env[SETTINGS_ENV]}"
    assert (settings.database_url, sources["database_url"]) == (None, "default")
    assert (settings.log_level, sources["log_level"]) == ("WARNING", file)
    # the kind's own table is read after [all]
    assert (settings.max_concurrent_rpcs, sources["max_concurrent_rpcs"]) == (11, file)
    assert (settings.host, sources["host"]) == ("10.0.0.2", "env LIVEMESH_HOST")
    assert (settings.port, sources["port"]) == (1003, "flag --port")


def test_blank_environment_values_count_as_unset(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "") | {"REDIS_URL": "", "LIVEMESH_TRACE_SAMPLE": " "}
    loaded = load(CatalogSettings, environ=env)
    assert loaded.settings.redis_url is None
    assert loaded.settings.trace_sample == 0.1
    assert loaded.sources["redis_url"] == loaded.sources["trace_sample"] == "default"


def test_flags_keep_their_names_and_meanings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SETTINGS_ENV, "")
    channels, _ = parse(ChannelsSettings, ["--no-demo"], argparse.ArgumentParser())
    assert channels.settings.seed_demo is False
    assert parse(ChannelsSettings, [], argparse.ArgumentParser())[0].settings.seed_demo
    parser = argparse.ArgumentParser()
    parser.add_argument("operand")
    edge, operands = parse(
        EdgeSettings,
        ["x", "--parent", "http://a", "--parent", "http://b", "--no-tokens", "--tier", "shield"],
        parser,
    )
    assert edge.settings.parent == ["http://a", "http://b"]
    assert edge.settings.no_tokens and edge.settings.tier == "shield"
    assert edge.sources["parent"] == "flag --parent"
    assert operands.operand == "x"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"LIVEMESH_CATALOG_PORT": "70000"},
            r"port = '70000' \(from env LIVEMESH_CATALOG_PORT\).*>= 0, <= 65535",
        ),
        (
            {"LIVEMESH_UVLOOP": "maybe"},
            r"uvloop = 'maybe' \(from env LIVEMESH_UVLOOP\).*one of on, off",
        ),
        ({"LIVEMESH_SHED_WAIT_MS": "-1"}, r"shed_wait_ms = '-1' .*>= 0"),
        ({"LIVEMESH_LOG_LEVEL": "LOUD"}, r"log_level = 'LOUD' .*one of DEBUG, INFO, WARNING"),
    ],
)
def test_a_bad_value_names_key_source_and_range(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(CatalogSettings, environ=settings_file(tmp_path, "") | env)


def test_an_unknown_key_in_a_kind_table_is_an_error(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "[catalog]\nprot = 1\n[all]\nrate = 5.0\n")
    with pytest.raises(ConfigError, match=r"prot in \[catalog\].*no such setting"):
        load(CatalogSettings, environ=env)
    # [all] holds keys of other kinds (the gateway's rate): not an error for the catalog
    assert load(RegistrySettings, environ=env).settings.port == 50051


def test_a_process_stops_on_a_bad_setting_with_exit_code_2(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "")
    flag = livemesh("catalog", "--port", "70000", env=env)
    assert flag.returncode == 2
    assert "port = '70000' (from flag --port)" in flag.stderr and "<= 65535" in flag.stderr
    environment = livemesh("registry", env=env | {"LIVEMESH_UVLOOP": "maybe"})
    assert environment.returncode == 2
    assert "uvloop = 'maybe' (from env LIVEMESH_UVLOOP)" in environment.stderr
    assert "Traceback" not in flag.stderr + environment.stderr


def show_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """``key value source`` lines of ``livemesh config show`` as {key: (value, source)}."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"^  (\w+) +(.+?) {2,}(.+)$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_config_show_prints_values_and_their_sources(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "[catalog]\nport = 7001\n") | {"LIVEMESH_HOST": "0.0.0.0"}
    done = livemesh(
        "config", "show", "catalog", "--database-url", "sqlite+aiosqlite:///t.db", env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[catalog]\n")
    rows = show_lines(done.stdout)
    assert rows["port"] == ("7001", f"file {env[SETTINGS_ENV]}")
    assert rows["host"] == ("'0.0.0.0'", "env LIVEMESH_HOST")
    assert rows["database_url"] == ("<set>", "flag --database-url")  # a secret: not shown
    assert rows["max_concurrent_rpcs"] == ("2000", "default")
    assert set(rows) == set(CatalogSettings.model_fields)


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    keys = "k1:" + "ab" * 16
    env = settings_file(tmp_path, "") | {
        "LIVEMESH_TOKEN_KEYS": keys,
        "REDIS_URL": "redis://:hunter2@db.example:6379/0",
    }
    done = livemesh("config", "show", "edge", "--admin-key", "s3cret-admin", env=env)
    assert done.returncode == 0, done.stderr
    rows = show_lines(done.stdout)
    assert rows["token_keys"] == ("<set>", "env LIVEMESH_TOKEN_KEYS")
    assert rows["admin_key"] == ("<set>", "flag --admin-key")
    assert keys not in done.stdout and "s3cret-admin" not in done.stdout
    every = livemesh(
        "config", "show", env=settings_file(tmp_path, "") | {"REDIS_URL": env["REDIS_URL"]}
    )
    assert every.returncode == 0, every.stderr
    assert "hunter2" not in every.stdout
    assert "'redis://:<set>@db.example:6379/0'" in every.stdout
    assert re.search(r"^  dev_key +<unset> +default$", every.stdout, re.M)
    assert [line[1:-1] for line in every.stdout.splitlines() if line.startswith("[")] == list(KINDS)


def test_the_sample_settings_file_shows_the_defaults() -> None:
    """Uncommented, deploy/settings.toml sets every key it names to its default."""
    lines = DEFAULT_FILE.read_text().splitlines()
    text = "\n".join(re.sub(r"^# (\w+ = )", r"\1", line) for line in lines)
    sample = tomllib.loads(text)
    assert sample.pop("all")
    for kind, table in sample.items():
        for key, value in table.items():
            assert KINDS[kind].model_fields[key].default == value, (kind, key)
    shared = tomllib.loads(text)["all"]
    for cls in (RegistrySettings, CatalogSettings):
        for key, value in shared.items():
            assert cls.model_fields[key].default == value, (cls.kind, key)


@pytest.mark.parametrize(("choice", "module"), [("on", "uvloop"), ("off", "asyncio")])
def test_the_loop_is_the_chosen_one(choice: str, module: str) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert loop.run(which(), choice) == module  # type: ignore[arg-type]


def test_a_logged_settings_object_shows_no_secret(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "") | {"LIVEMESH_EDGE_ADMIN_KEY": "s3cret-admin"}
    settings = load(EdgeSettings, environ=env).settings
    assert settings.admin_key == "s3cret-admin"
    assert "s3cret-admin" not in repr(settings) and "s3cret-admin" not in str(settings)


def test_edge_flags_show_as_their_source_and_a_bad_one_exits_2(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "")
    shown = livemesh("config", "show", "edge", "--parent", "http://shield:8082", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = show_lines(shown.stdout)
    assert rows["parent"] == ("['http://shield:8082']", "flag --parent")
    assert rows["head_timeout"] == ("5.0", "default")
    bad = livemesh("edge", "--parent", "http://shield:8082", "--cache-bytes", "0", env=env)
    assert bad.returncode == 2
    assert "bad setting cache_bytes = '0' (from flag --cache-bytes)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_config_show_channel_and_ingest(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "[ingest]\nhttp_port = 9090\n") | {"REDIS_URL": "redis://r:1"}
    channel = livemesh("config", "show", "channel", "--metrics-port", "9100", env=env)
    assert channel.returncode == 0, channel.stderr
    rows = show_lines(channel.stdout)
    assert rows["metrics_port"] == ("9100", "flag --metrics-port")
    assert rows["uvloop"] == ("'off'", "default")
    assert rows["redis_url"] == ("'redis://r:1'", "env REDIS_URL")
    ingest = livemesh(
        "config", "show", "ingest", "--channel", "a", "--channel", "b", "--dev-key", "a=k3y",
        env=env,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    rows = show_lines(ingest.stdout)
    assert rows["channel"] == ("['a', 'b']", "flag --channel")
    assert rows["http_port"] == ("9090", f"file {env[SETTINGS_ENV]}")
    assert rows["dev_key"] == ("<set>", "flag --dev-key")
    assert "k3y" not in ingest.stdout


def test_channel_and_ingest_stop_on_a_bad_setting_or_a_missing_operand(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "") | {"REDIS_URL": "redis://127.0.0.1:1"}
    channel = livemesh("channel", "demo", "--metrics-port", "70000", env=env)
    assert channel.returncode == 2
    assert "bad setting metrics_port = '70000' (from flag --metrics-port)" in channel.stderr
    no_redis = livemesh("channel", "demo", env=settings_file(tmp_path, ""))
    assert no_redis.returncode == 2 and "REDIS_URL" in no_redis.stderr
    ingest = livemesh("ingest", "--http-port", "8091", env=env)
    assert ingest.returncode == 2 and "required: --channel" in ingest.stderr
    assert "Traceback" not in channel.stderr + no_redis.stderr + ingest.stderr


def test_tls_paths_and_credentials_are_settings(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "") | {
        CA_ENV: "/c/ca.crt",
        CERT_ENV: "/c/tls.crt",
        KEY_ENV: "/c/tls.key",
        KEY_FILE_ENV: "/secret/credential-key.pem",
        NODE_CREDENTIAL_ENV: "node-jwt-value",
    }
    registry = livemesh("config", "show", "registry", env=env)
    assert registry.returncode == 0, registry.stderr
    rows = show_lines(registry.stdout)
    assert rows["tls_ca"] == ("/c/ca.crt", f"env {CA_ENV}")
    assert rows["tls_key"] == ("/c/tls.key", f"env {KEY_ENV}")
    assert rows["credential_key_file"] == ("<set>", f"env {KEY_FILE_ENV}")
    assert rows["credential_public_key"] == ("None", "default")
    edge = livemesh("config", "show", "edge", env=env)
    assert edge.returncode == 0, edge.stderr
    assert show_lines(edge.stdout)["node_credential"] == ("<set>", f"env {NODE_CREDENTIAL_ENV}")
    every = livemesh("config", "show", env=env)
    assert "/secret/credential-key.pem" not in every.stdout
    assert "node-jwt-value" not in every.stdout


def test_the_tls_files_are_read_through_the_settings_layers(tmp_path: Path) -> None:
    env = settings_file(tmp_path, '[all]\ntls_ca = "/file/ca.crt"\n')
    env |= {CERT_ENV: "/env/tls.crt", KEY_ENV: "/env/tls.key"}
    assert tls_settings(env) == TlsPaths(
        Path("/file/ca.crt"), Path("/env/tls.crt"), Path("/env/tls.key")
    )


def test_the_load_test_flags_are_its_settings(tmp_path: Path) -> None:
    env = settings_file(tmp_path, "")
    bad = livemesh("loadtest", "run", "fight-night", "--workers", "-1", env=env)
    assert bad.returncode == 2
    assert "bad setting workers = '-1' (from flag --workers)" in bad.stderr
    args = build_parser().parse_args(["run", "x", "--faults-file", "/f.json"])
    loaded = load(LoadtestSettings, given_flags(LoadtestSettings, args), env | {FAULTS: "/e"})
    assert (loaded.settings.faults_file, loaded.sources["faults_file"]) == (
        "/f.json",
        "flag --faults-file",
    )
    args = build_parser().parse_args(["run", "x"])
    loaded = load(LoadtestSettings, given_flags(LoadtestSettings, args), env | {FAULTS: "/e"})
    assert (loaded.settings.faults_file, loaded.settings.workers) == ("/e", 0)
