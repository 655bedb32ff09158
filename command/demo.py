"""``livemesh demo``: the local topology of ``deploy/local.toml`` on embedded defaults.

Redis comes first (the embedded one unless ``REDIS_URL`` is set), then every process in
the file's order, each waited for when it declares a readiness URL. SIGINT or SIGTERM
stops everything, children first, and leaves no process behind. Keys not configured
(URL-token keys, the credential key) are made for the run; the CA, an operator client
certificate and the credential key are in the run directory (--run-dir) until it stops.
"""

from __future__ import annotations

import argparse

from kernel.config import DemoSettings, parse
from kernel.supervise import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh demo", description=__doc__)
    settings = parse(DemoSettings, argv, parser)[0].settings
    return run(settings.topology, settings.free_ports, settings.run_dir)
