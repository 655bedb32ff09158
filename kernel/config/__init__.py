"""Typed settings of every livemesh process kind, layered defaults -> settings file ->
environment -> command-line flags, validated once at start (see :mod:`.load`).

A process's main calls :func:`parse` with its kind's class from :data:`KINDS` (or
:func:`load` when it parses its own command line); kernel code that needs one key reads
it through :func:`load` of the small shared class (``ResilienceSettings``, ...).
"""

from __future__ import annotations

from kernel.config.base import (
    ConfigError,
    LogLevel,
    OnOff,
    ProcessSettings,
    RedisSettings,
    ResilienceSettings,
    Settings,
    TokenSettings,
)
from kernel.config.control import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_ORIGIN_URL,
    DEFAULT_TOKEN_TTL_S,
    DEFAULT_URL_TTL_S,
    SERVICE_PORTS,
    CatalogSettings,
    ChannelsSettings,
    DatabaseSettings,
    ExperimentsSettings,
    GatewaySettings,
    IdentitySettings,
    PlaybackSettings,
    ProfileSettings,
    QoeSettings,
    RecommendSettings,
    RegistrySettings,
    SearchSettings,
    ServiceSettings,
    WorkersSettings,
)
from kernel.config.data import ChannelSettings, EdgeSettings, IngestSettings, OriginSettings
from kernel.config.load import Loaded, add_flags, given_flags, load, parse, settings_file
from kernel.config.stack import DEFAULT_TOPOLOGY, DemoSettings, LoadtestSettings
from kernel.config.trust import CredentialSettings, NodeCredentialSettings, TlsSettings

# every process kind, in the order ``livemesh config show`` prints them
KINDS: dict[str, type[Settings]] = {
    cls.kind: cls
    for cls in (
        OriginSettings,
        EdgeSettings,
        ChannelSettings,
        IngestSettings,
        RegistrySettings,
        IdentitySettings,
        CatalogSettings,
        SearchSettings,
        ProfileSettings,
        RecommendSettings,
        PlaybackSettings,
        ChannelsSettings,
        ExperimentsSettings,
        GatewaySettings,
        QoeSettings,
        DemoSettings,
        LoadtestSettings,
    )
}

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_MAX_CONCURRENT_RPCS",
    "DEFAULT_ORIGIN_URL",
    "DEFAULT_TOKEN_TTL_S",
    "DEFAULT_TOPOLOGY",
    "DEFAULT_URL_TTL_S",
    "KINDS",
    "SERVICE_PORTS",
    "CatalogSettings",
    "ChannelSettings",
    "ChannelsSettings",
    "ConfigError",
    "CredentialSettings",
    "DatabaseSettings",
    "DemoSettings",
    "EdgeSettings",
    "ExperimentsSettings",
    "GatewaySettings",
    "IdentitySettings",
    "IngestSettings",
    "Loaded",
    "LoadtestSettings",
    "LogLevel",
    "NodeCredentialSettings",
    "OnOff",
    "OriginSettings",
    "PlaybackSettings",
    "ProcessSettings",
    "ProfileSettings",
    "QoeSettings",
    "RecommendSettings",
    "RedisSettings",
    "RegistrySettings",
    "ResilienceSettings",
    "SearchSettings",
    "ServiceSettings",
    "Settings",
    "TlsSettings",
    "TokenSettings",
    "WorkersSettings",
    "add_flags",
    "given_flags",
    "load",
    "parse",
    "settings_file",
]
