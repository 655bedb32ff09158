"""Benchmark: origin requests per object as viewers go from 1 to 10,000 (issue 5 (c)).

A thin entry point to the fan-out part of ``bench/edge_fanout.py`` (its topology and its
``measure``; nothing copied): embedded Redis, origin, a live channel, one shield and two
edges (tokens on).  For each step N (1, 10, 100, 1,000, 10,000; ``--quick`` stops at
1,000) N viewers, spread over the two edges, ask at once for the *next* segment of the
audio rendition (held at every tier until its first chunk exists, then streamed).
Figures per step: origin requests for that object (the origin's own ``/metrics``), the
shield's and the edges' upstream fetches, errors, identical bodies.
Target (DESIGN.md §7): flat at exactly 1 origin fetch per shield (here one shield: 1).
Baseline without the tier: N.  ``edge_fanout.measure`` is called with an empty flash
crowd (zero viewers: it only waits for two segment starts); its two empty report lines
are dropped.  Run: ``python bench/origin_fanout.py [--quick] [--steps 1,10,100]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile

from _harness import Procs, loadavg, print_result, raise_fd_limit
from edge_fanout import CHANNEL, FANOUT_REP, measure

from kernel.redis_server import EmbeddedRedis


class _DropCrowdLines(io.TextIOBase):
    """Forwards whole lines to ``out``, except the (empty) flash-crowd reports."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out = out
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not line.startswith("  flash crowd via"):
                self.out.write(line + "\n")
        self.out.flush()
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="steps up to 1,000 viewers")
    parser.add_argument("--steps", default=None, help="viewer counts, e.g. 1,10,100")
    args = parser.parse_args()
    steps = [1, 10, 100, 1000] if args.quick else [1, 10, 100, 1000, 10_000]
    if args.steps is not None:
        steps = [int(n) for n in args.steps.split(",") if n]
    raise_fd_limit(max(steps, default=0) + 1024)
    print(f"load average at start: {loadavg()}", flush=True)
    import uvloop

    with (
        EmbeddedRedis() as redis,
        tempfile.TemporaryDirectory(prefix="lm-ofanout-") as logs,
        Procs(logs) as procs,
    ):
        origin = procs.origin(redis.url)
        procs.channel(CHANNEL, redis.url)
        shield = procs.edge("shield-1", "shield", [origin], tokens=False)
        edges = [procs.edge(f"edge-{i}", "edge", [shield], [origin]) for i in (1, 2)]
        with contextlib.redirect_stdout(_DropCrowdLines(sys.stdout)):  # type: ignore[arg-type]
            figures = uvloop.run(
                measure(procs, redis.url, origin, shield, edges, steps, 0, 0, FANOUT_REP)
            )
        procs.check_alive()
    print(f"load average at end: {loadavg()}")
    fanout = figures["fanout"]
    assert isinstance(fanout, list)
    print(f"origin fetches per object ({FANOUT_REP}, one shield, two edges; baseline = viewers):")
    for row in fanout:
        print(
            f"  {row['viewers']:>6} viewers -> {row['origin_fetches']} origin fetch(es), "
            f"shield {row['shield_fetches']}, edges {row['edge_fetches']}"
        )
    met = all(row["origin_fetches"] == 1 and not row["errors"] for row in fanout)
    print(
        f"target (exactly 1 origin fetch per object at every step): {'met' if met else 'NOT met'}"
    )
    print_result(
        {
            "viewers": [r["viewers"] for r in fanout],
            "origin_fetches": [r["origin_fetches"] for r in fanout],
            "shield_fetches": [r["shield_fetches"] for r in fanout],
            "edge_fetches": [r["edge_fetches"] for r in fanout],
            "max_origin_fetches_per_object": max((r["origin_fetches"] for r in fanout), default=0),
            "errors": sum(r["errors"] for r in fanout),
            "identical_bodies": all(r["same_bytes"] for r in fanout),
            "wall_s": [r["wall_s"] for r in fanout],
            "target_met": met,
            "load_average": loadavg(),
        }
    )


if __name__ == "__main__":
    main()
