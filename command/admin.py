"""``livemesh admin``: operator chores from a shell.

``livemesh admin token --role operator|node|service [--subject NAME] [--ttl S]`` prints
a credential signed with the configured credential key (``LIVEMESH_CREDENTIAL_KEY_FILE``),
for grpcurl and scripts::

    grpcurl -H "authorization: Bearer $(livemesh admin token --role operator)" ...

``livemesh admin channel create|rotate|end NAME`` manages a broadcaster's channel through
the gateway with such a credential (:mod:`command.admin_channels`).
"""

from __future__ import annotations

import argparse
import sys

from command import admin_channels
from kernel.config import ConfigError
from kernel.rpc import credentials
from kernel.rpc.auth import NODE


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="livemesh admin", description=__doc__.splitlines()[0])
    commands = made.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="mint a credential and print it")
    token.add_argument("--role", required=True, choices=credentials.ROLES)
    token.add_argument(
        "--subject", help="who it speaks for (a node: its instance name; required for nodes)"
    )
    token.add_argument(
        "--ttl", type=int, default=credentials.DEFAULT_TTL_S, help="lifetime, seconds"
    )
    admin_channels.add_parser(commands)
    return made


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "channel":
        return _channel(args)
    if args.role == NODE and not args.subject:
        print(
            "livemesh admin: a node credential needs --subject (the node's name)", file=sys.stderr
        )
        return 2
    try:
        key = credentials.signing_key_from_env()
        print(credentials.mint(key, args.role, args.subject or "admin", args.ttl))
    except (credentials.MissingKey, ConfigError, ValueError, OSError) as exc:
        print(f"livemesh admin: {exc}", file=sys.stderr)
        return 2
    return 0


def _channel(args: argparse.Namespace) -> int:
    try:
        return admin_channels.run(args)
    except (credentials.MissingKey, ConfigError, ValueError, OSError) as exc:
        print(f"livemesh admin: {exc}", file=sys.stderr)
        return 2
