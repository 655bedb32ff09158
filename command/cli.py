"""The ``livemesh`` command: one sub-command per process the stack runs.

Each component owns its entry point as ``main(argv) -> int`` in its own module;
this table only names them, so adding a process is one line here.
"""

from __future__ import annotations

import importlib
import sys

from kernel.config import KINDS, WorkersSettings
from kernel.workers import group_size, shared_metrics

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "demo": ("command.demo", "run the local stack with a live demo channel"),
    "origin": ("live.origin", "serve LL-DASH from the manifest state in Redis"),
    "channel": ("live.channel", "run a live channel: source, ABR encode, CMAF package"),
    "ingest": ("live.ingest.server", "take WHIP and RTMP broadcasters into live channels"),
    "edge": ("edge.main", "run an edge or shield cache node (tier set by --parent)"),
    "registry": ("services.registry.service", "run the service registry (gRPC)"),
    "identity": ("services.identity.service", "run the identity service: accounts, tokens (gRPC)"),
    "catalog": ("services.catalog.service", "run the catalog service (gRPC)"),
    "search": ("services.search.service", "run the search service (gRPC)"),
    "profile": ("services.profile.service", "run the profile service (gRPC)"),
    "recommend": ("services.recommend.service", "run the recommendation service (gRPC)"),
    "playback": ("services.playback.service", "run the playback service (gRPC)"),
    "channels": ("services.channels.service", "run the live channel service (gRPC)"),
    "experiments": (
        "command.experiments",
        "experiments: run the service (serve), or define, start, stop, read out",
    ),
    "qoe": ("services.qoe.main", "aggregate players' QoE from the edges: metrics, edge health"),
    "gateway": ("services.gateway.app", "run the HTTP/JSON gateway for players and browsers"),
    "admin": ("command.admin", "operator chores: mint credentials (admin token --role ...)"),
    "loadtest": ("loadrig.cli", "run spike profiles with chaos against the stack; scale model"),
    "vod": ("command.vod", "on-demand titles: publish a file (per-title ladder), pre-position"),
    "config": ("command.config", "show each process kind's effective settings and their sources"),
    "health": ("command.health", "check that a process answers (the image's HEALTHCHECK)"),
    "k8s": ("command.k8s", "render a deploy/k8s overlay and check it: schemas and our rules"),
    "canary": ("command.canary", "run a canary of a gRPC service: analysis, promote or roll back"),
}


def usage() -> str:
    lines = ["usage: livemesh <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_mod, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"livemesh: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # a kind that may run as several processes on one port (kernel/workers.py) shares its
    # metrics through files; alone (its group of one) it keeps them in memory
    kind = KINDS.get(command)
    if kind is None or not issubclass(kind, WorkersSettings) or group_size(kind, rest) == 1:
        return _run(command, rest)
    with shared_metrics():  # before the kind imports prometheus_client
        return _run(command, rest)


def _run(command: str, rest: list[str]) -> int:
    module = importlib.import_module(COMMANDS[command][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
