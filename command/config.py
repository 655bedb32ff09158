"""``livemesh config show [PROCESS] [FLAGS...]``: every effective setting of a process
kind (or of all kinds), its value and where it came from: ``default``, ``file PATH``,
``env NAME`` or ``flag --NAME`` (FLAGS are that process's own flags, layered on top as
its command line would be). Secrets are printed only as ``<set>`` or ``<unset>``.

It validates as the processes do: a bad setting is reported, naming the key and what it
allows, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys

from kernel.config import KINDS, ConfigError, Loaded, Settings, load, parse
from kernel.config.load import shown


def render(loaded: Loaded[Settings]) -> str:
    """``[kind]`` then one line per key: name, value, source."""
    settings = loaded.settings
    lines = [f"[{settings.kind}]"]
    for key, field in type(settings).model_fields.items():
        value = shown(field, getattr(settings, key))
        lines.append(f"  {key:<28} {value:<40} {loaded.sources[key]}")
    return "\n".join(lines)


def show(kinds: list[str], flags: list[str]) -> int:
    status = 0
    for kind in kinds:
        cls = KINDS[kind]
        try:
            if flags:
                loaded = parse(cls, flags, argparse.ArgumentParser(prog=f"livemesh {kind}"))[0]
            else:
                loaded = load(cls)
        except ConfigError as exc:
            print(f"livemesh {kind}: {exc}", file=sys.stderr)
            status = 2
            continue
        print(render(loaded))
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh config", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    show_p = actions.add_parser("show", help="print each effective setting and its source")
    show_p.add_argument("process", nargs="?", choices=list(KINDS), help="default: every kind")
    show_p.add_argument("flags", nargs=argparse.REMAINDER, help="that process's flags")
    args = parser.parse_args(argv)
    if args.flags and args.process is None:
        parser.error("flags need a PROCESS")
    return show([args.process] if args.process else list(KINDS), args.flags)
