"""``livemesh admin channel create|rotate|end NAME``: a broadcaster's channel from a shell.

Through the gateway's HTTP/JSON API (``--gateway``, default the demo's), as the operator
console does, with an operator credential minted from the configured credential key
(``LIVEMESH_CREDENTIAL_KEY_FILE``): no client certificate or gRPC tool is needed.  ``create``
and ``rotate`` print the stream key alone on stdout, so ``KEY=$(...)`` keeps it; it is
shown this once (the service stores only its digest).  A refusal prints the gateway's
reason and field and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any

from kernel.channel_config import DEFAULT_VIDEO_LADDER
from kernel.config.control import GATEWAY_PORT
from kernel.rpc import credentials
from kernel.rpc.auth import OPERATOR

DEFAULT_GATEWAY = f"http://127.0.0.1:{GATEWAY_PORT}"
TIMEOUT_S = 30.0
RUNGS = {r.name: r for r in DEFAULT_VIDEO_LADDER}


class Refused(Exception):
    """The gateway said no: its message, with the field it names."""


def add_parser(commands: Any) -> None:
    """``channel`` under ``livemesh admin``."""
    channel = commands.add_parser("channel", help="create a channel, rotate its key, end it")
    actions = channel.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a channel; print its stream key once")
    create.add_argument("name", help="channel id (a-z, 0-9, -, _)")
    create.add_argument("--display-name", help="what viewers see (default: the id)")
    create.add_argument(
        "--rungs",
        default="",
        help=f"comma-separated video rungs of the default ladder ({','.join(RUNGS)}; default: all)",
    )
    for action, what in (("rotate", "replace its stream key; print the new one"),
                         ("end", "end it for good: its key stops working")):  # fmt: skip
        actions.add_parser(action, help=what).add_argument("name", help="channel id")
    for sub in actions.choices.values():
        sub.add_argument("--gateway", default=DEFAULT_GATEWAY, help="the gateway's base URL")


def run(args: argparse.Namespace) -> int:
    """The action; the credential key's errors are the caller's to report."""
    try:
        key = credentials.signing_key_from_env()
        operator = credentials.mint(key, OPERATOR, "admin-cli")
        if args.action == "create":
            channel = {"displayName": args.display_name or args.name}
            channel["videoLadder"] = _ladder(args.rungs)
            body = {"channelId": args.name, "channel": channel, "requestId": str(uuid.uuid4())}
            print(_post(args.gateway, "/v1/channels", body, operator)["streamKey"])
        elif args.action == "rotate":
            body = {"requestId": str(uuid.uuid4())}
            path = f"/v1/channels/{args.name}:rotateStreamKey"
            print(_post(args.gateway, path, body, operator)["streamKey"])
        else:
            _post(args.gateway, f"/v1/channels/{args.name}:end", {}, operator)
            print(f"channel {args.name} ended", file=sys.stderr)
    except Refused as exc:
        print(f"livemesh admin channel {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _ladder(names: str) -> list[dict[str, object]]:
    """The named rungs of the default ladder as the API takes them (none: the service's
    default ladder)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in RUNGS]
    if unknown:
        raise Refused(f"unknown rungs {unknown}; known: {sorted(RUNGS)}")
    return [
        {"name": r.name, "width": r.width, "height": r.height, "bitrate": r.bitrate}
        for r in (RUNGS[n] for n in wanted)
    ]


def _post(gateway: str, path: str, body: dict[str, Any], operator: str) -> dict[str, Any]:
    request = urllib.request.Request(
        gateway.rstrip("/") + path,
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {operator}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except urllib.error.HTTPError as exc:
        raise Refused(_reason(exc)) from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise Refused(f"no answer from the gateway at {gateway}: {exc}") from None


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.load(exc).get("error", {})
    except (ValueError, AttributeError):
        return f"HTTP {exc.code}"
    field = f" ({error['field']})" if error.get("field") else ""
    return f"{error.get('message', f'HTTP {exc.code}')}{field}"
