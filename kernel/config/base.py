"""The settings every process kind shares: logging, the event loop, Redis, URL-token
keys, and the resilience layer's switches.

Each process kind's class (see :data:`kernel.config.KINDS`) is built from these; a
class's ``kind`` names its section in the settings file.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from kernel.config.fields import env_name, flag_name, setting


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
OnOff = Literal["on", "off"]


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key, its source and range."""


class Settings(BaseModel):
    """Frozen once loaded; a key no class declares is an error, not silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = "all"


class RedisSettings(Settings):
    redis_url: str | None = setting(
        None,
        env="REDIS_URL",
        flag="--redis-url",
        help="the Redis server, redis+cluster://host:port for a Redis Cluster "
        "(unset: a private embedded redis-server where one is run)",
    )

    def required_redis_url(self) -> str:
        """The Redis URL of a process that cannot run without one."""
        if not self.redis_url:
            raise ConfigError("no Redis: give --redis-url or set REDIS_URL")
        return self.redis_url


class TokenSettings(Settings):
    token_keys: str | None = setting(
        None,
        env="LIVEMESH_TOKEN_KEYS",
        secret=True,
        help="URL-token keys kid:hexsecret,... (the first signs); no default",
    )

    def required_token_keys(self) -> str:
        """The keys of a process that signs or verifies URL tokens (there is no default)."""
        if not self.token_keys:
            field = type(self).model_fields["token_keys"]
            flag = flag_name(field)
            given = f"give {flag} or set {env_name(field)}" if flag else f"set {env_name(field)}"
            raise ConfigError(f"no URL-token keys: {given} (kid:hexsecret,...)")
        return self.token_keys


class ResilienceSettings(Settings):
    """The server side of the resilience layer (read by every gRPC server)."""

    load_shedding: OnOff = setting(
        "on", env="LIVEMESH_LOAD_SHEDDING", help="off leaves the adaptive limiter out"
    )
    shed_wait_ms: float | None = setting(
        None,
        env="LIVEMESH_SHED_WAIT_MS",
        ge=0,
        help="the load shedder's wait-rule floor, ms (unset: the limiter's default, 25)",
    )
    trace_sample: float = setting(
        0.1,
        env="LIVEMESH_TRACE_SAMPLE",
        help="head sampling ratio of traces, clamped to 0..1",
    )
    otlp_endpoint: str | None = setting(
        None,
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
        pattern=r"^https?://",
        help="OTLP/HTTP collector base URL (spans go to /v1/traces), the OpenTelemetry name",
    )
    trace_dir: str | None = setting(
        None,
        env="LIVEMESH_TRACE_DIR",
        help="without an OTLP endpoint: spans as JSON lines into DIR/{process}.jsonl",
    )
    faults_file: str | None = setting(
        None,
        env="LIVEMESH_FAULTS_FILE",
        help="JSON fault rules, re-read when the file changes (chaos tests, the load rig)",
    )
    split_file: str | None = setting(
        None,
        env="LIVEMESH_SPLIT_FILE",
        help="JSON weighted extra instances per dependency, re-read on change (a canary)",
    )

    @field_validator("trace_sample", mode="after")
    @classmethod
    def _clamp(cls, value: float) -> float:
        """A ratio past either end means 'never' or 'always', as it always has."""
        return min(1.0, max(0.0, value))


class ProcessSettings(Settings):
    """What every long-running process has: its log level and its event loop."""

    log_level: LogLevel = setting("INFO", env="LIVEMESH_LOG_LEVEL", help="logging level")
    uvloop: OnOff = setting(
        "on",
        env="LIVEMESH_UVLOOP",
        help="run on uvloop (libuv: cheaper socket I/O for aiohttp and redis), else asyncio's",
    )
