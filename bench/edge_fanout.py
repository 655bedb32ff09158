"""Benchmark: what the edge tier buys a live channel: origin fetches and flash-crowd lateness.

Starts its own Redis (embedded), origin, live channel (default ladder), one shield and
two edges (tokens on) as separate processes, then:

1. **Fan-out**: N viewers (1, 10, 100, 1,000, 10,000) ask at once, spread over the two
   edges, for the *next* segment of the audio rendition (held at every tier until its
   first chunk exists, then streamed).  Figures: origin requests per object (the origin's
   own ``/metrics``), the shield's and the edges' upstream fetches.  Target: exactly 1
   origin fetch per shield (here: 1), whatever N.  Baseline: N (each viewer at the origin).
2. **Flash crowd**: 2,000 viewers join within 1 s at the live edge (each holds a request
   for the next segment of ``--rep``, then reads the following ones as they stream,
   chunk by chunk) through shield + 2 edges; then, as the baseline in the same run, the
   same crowd straight at the origin.  Per chunk and viewer, *lateness* = arrival minus
   the moment the chunk became available to that viewer (stored in Redis, from the
   event id, or the viewer's request, whichever is later); first-byte lateness likewise
   for each viewer's first segment.  A viewer *runs dry* when any chunk is later than one
   chunk duration C (or its stream fails).  Target (DESIGN.md §7): no viewer runs dry.

Viewers are raw asyncio connections with the llhttp parser in this process (uvloop);
bodies are counted, never kept.  Run: ``python bench/edge_fanout.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from _harness import (
    LiveViewer,
    LoopLag,
    Procs,
    chunk_times,
    edge_fetches,
    loadavg,
    next_segment,
    origin_requests,
    print_result,
    raise_fd_limit,
    ratio,
    stored_at,
    wait_live,
)

from kernel.redis_server import EmbeddedRedis
from kernel.stats import summary_ms

CHANNEL = "fanout"
FANOUT_REP = "a128"  # the smallest object: fetch counts do not depend on size
CHUNK_MS = 200


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    prefix: str  # the path up to the representation, token included

    @classmethod
    def of(cls, base: str, prefix: str) -> Target:
        url = urlsplit(base)
        assert url.hostname is not None and url.port is not None
        return cls(url.hostname, url.port, prefix)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_crowd(
    targets: list[Target], count: int, join_s: float, first: int, last: int
) -> list[LiveViewer]:
    """``count`` viewers, round-robin over ``targets``, joining evenly over ``join_s``."""
    viewers = [
        LiveViewer(t.host, t.port, t.prefix)
        for t in (targets[i % len(targets)] for i in range(count))
    ]

    async def one(index: int, viewer: LiveViewer) -> None:
        if join_s:
            await asyncio.sleep(index * join_s / count)
        await viewer.play(first, last)

    await asyncio.gather(*(one(i, v) for i, v in enumerate(viewers)))
    return viewers


def lateness(
    viewers: list[LiveViewer], stored: dict[tuple[int, int], int], first: int
) -> dict[str, object]:
    """First-byte and chunk lateness (ms) and the viewers that ran dry."""
    times = chunk_times(stored)
    first_byte: list[float] = []
    chunks: list[float] = []
    dry = 0
    late_chunks = 0
    unmatched = 0
    late_at: dict[int, int] = {}  # late chunks by their place in the segment
    for viewer in viewers:
        requested = {n: req for n, req, _ in viewer.segments}
        worst = 0.0
        for n, req, fb in viewer.segments:
            if n == first and times.get(n):
                first_byte.append(fb * 1000 - max(times[n][0] + 0.5, req * 1000))
        for n, i, arrival in viewer.chunks:
            seg = times.get(n, [])
            if i >= len(seg):
                unmatched += 1
                continue
            late = arrival * 1000 - max(seg[i] + 0.5, requested[n] * 1000)
            chunks.append(late)
            worst = max(worst, late)
            late_chunks += late > CHUNK_MS
            if late > CHUNK_MS:
                late_at[i] = late_at.get(i, 0) + 1
        dry += bool(viewer.errors) or worst > CHUNK_MS
    errors = [e for v in viewers for e in v.errors]
    return {
        "first_byte": summary_ms(first_byte),
        "chunk": summary_ms(chunks),
        "dry_viewers": dry,
        "late_chunk_share": round(late_chunks / max(1, len(chunks)), 4),
        "unmatched_chunks": unmatched,
        "late_by_chunk_index": dict(sorted(late_at.items())),
        "errors": len(errors),
        "error_sample": errors[:3],
        "bytes": sum(v.bytes for v in viewers),
    }


async def measure(
    procs: Procs,
    redis_url: str,
    origin: str,
    shield: str,
    edges: list[str],
    steps: list[int],
    crowd: int,
    segments: int,
    rep: str,
) -> dict[str, object]:
    epoch = await wait_live(redis_url, CHANNEL, rep)
    token = procs.signer.sign(f"/live/{CHANNEL}/", "bench-session", 3600)
    out: dict[str, object] = {"epoch": epoch}

    def via_edges(r: str) -> list[Target]:
        return [Target.of(e, f"/t/{token}/live/{CHANNEL}/{epoch}/{r}") for e in edges]

    # 1. fan-out steps: origin fetches per object
    fanout = []
    for count in steps:
        number = await next_segment(redis_url, CHANNEL, epoch, FANOUT_REP)
        o0, s0 = origin_requests(origin), edge_fetches(shield)
        e0 = sum(edge_fetches(e) for e in edges)
        t0 = time.perf_counter()
        viewers = await run_crowd(via_edges(FANOUT_REP), count, 0.0, number, number)
        wall = time.perf_counter() - t0
        sizes = {v.bytes for v in viewers if not v.errors}
        row = {
            "viewers": count,
            "origin_fetches": origin_requests(origin) - o0 - 1,  # less the /metrics scrape
            "shield_fetches": edge_fetches(shield) - s0,
            "edge_fetches": sum(edge_fetches(e) for e in edges) - e0,
            "errors": sum(bool(v.errors) for v in viewers),
            "same_bytes": len(sizes) == 1,
            "wall_s": round(wall, 2),
        }
        print(
            f"  fan-out {count:>6} viewers: origin fetches {row['origin_fetches']}, shield "
            f"fetches {row['shield_fetches']}, edge fetches {row['edge_fetches']}, errors "
            f"{row['errors']}, identical bodies {row['same_bytes']} ({row['wall_s']} s)",
            flush=True,
        )
        fanout.append(row)
    out["fanout"] = fanout

    # 2. flash crowd, through the tier, then straight at the origin
    direct = [Target.of(origin, f"/live/{CHANNEL}/{epoch}/{rep}")]
    for name, targets in (("tier", via_edges(rep)), ("origin", direct)):
        first = await next_segment(redis_url, CHANNEL, epoch, rep)
        o0 = origin_requests(origin)
        c0, t0, p0 = cpu_s(), time.perf_counter(), procs.cpu()
        with LoopLag() as lag:
            viewers = await run_crowd(targets, crowd, 1.0, first, first + segments - 1)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        used = {k: round((v - p0.get(k, 0.0)) / wall, 2) for k, v in procs.cpu().items()}
        figures = lateness(viewers, await stored_at(redis_url, CHANNEL, epoch, rep), first)
        figures["origin_requests"] = origin_requests(origin) - o0 - 1  # less the scrape
        figures["client_cpu_share"] = round(cpu / wall, 2)
        figures["cpu_share"] = used  # CPU-seconds per second of each child during the crowd
        loop_lag = figures["client_loop_lag"] = summary_ms(lag.samples)
        out[name] = figures
        fb, ch = figures["first_byte"], figures["chunk"]
        assert isinstance(fb, dict) and isinstance(ch, dict)
        print(
            f"  flash crowd via {name:6}: first byte late p50 {fb['p50_ms']} p99 {fb['p99_ms']} "
            f"max {fb['max_ms']} ms; chunks late p50 {ch['p50_ms']} p99 {ch['p99_ms']} max "
            f"{ch['max_ms']} ms ({ch['count']} chunks); dry viewers {figures['dry_viewers']}/"
            f"{crowd}; origin requests {figures['origin_requests']}; client CPU "
            f"{figures['client_cpu_share']}; errors {figures['errors']} {figures['error_sample']}; "
            f"late chunks by index in segment {figures['late_by_chunk_index']}; "
            f"CPU share of the children {used}; client loop lag p50 "
            f"{loop_lag['p50_ms']} p99 {loop_lag['p99_ms']} ms",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer viewers, shorter crowd")
    parser.add_argument("--rep", default="v360", help="representation of the flash crowd")
    parser.add_argument("--crowd", type=int, default=None, help="flash-crowd viewers (2000)")
    parser.add_argument("--steps", default=None, help="fan-out viewer counts, e.g. 1,10,100")
    args = parser.parse_args()
    steps = [1, 10, 100, 1000] if args.quick else [1, 10, 100, 1000, 10_000]
    if args.steps is not None:
        steps = [int(n) for n in args.steps.split(",") if n]
    crowd = args.crowd or (500 if args.quick else 2000)
    segments = 2 if args.quick else 4
    raise_fd_limit(max(steps, default=0) + crowd + 1024)
    print(f"load average at start: {loadavg()}", flush=True)
    import uvloop

    with (
        EmbeddedRedis() as redis,
        tempfile.TemporaryDirectory(prefix="lm-fanout-") as logs,
        Procs(logs) as procs,
    ):
        origin = procs.origin(redis.url)
        procs.channel(CHANNEL, redis.url)
        shield = procs.edge("shield-1", "shield", [origin], tokens=False)
        edges = [procs.edge(f"edge-{i}", "edge", [shield], [origin]) for i in (1, 2)]
        figures = uvloop.run(
            measure(procs, redis.url, origin, shield, edges, steps, crowd, segments, args.rep)
        )
        procs.check_alive()
        failovers = {
            name: procs.log_lines(name, "parent failed")
            for name in ("edge-1", "edge-2", "shield-1")
        }
    for name, lines in failovers.items():
        if lines:
            print(f"{name}: {len(lines)} parent failure(s), e.g. {lines[0][:300]}")
    print(f"load average at end: {loadavg()}")
    fanout = figures["fanout"]
    tier, direct = figures["tier"], figures["origin"]
    assert isinstance(fanout, list) and isinstance(tier, dict) and isinstance(direct, dict)
    print("fan-out (origin fetches per object; baseline without the tier = viewers):")
    for row in fanout:
        print(f"  {row['viewers']:>6} viewers -> {row['origin_fetches']} origin fetch(es)")
    print(f"flash crowd, {crowd} viewers joining within 1 s, {segments} segments of {args.rep}:")
    for name, fig in (("edge tier", tier), ("origin (baseline)", direct)):
        print(
            f"  {name:18}: dry {fig['dry_viewers']}/{crowd}, late chunks "
            f"{fig['late_chunk_share'] * 100:.1f} %, first byte p99 {fig['first_byte']['p99_ms']} "
            f"ms, chunk p99 {fig['chunk']['p99_ms']} ms, origin requests {fig['origin_requests']}"
        )
    result = {
        "fanout_viewers": [r["viewers"] for r in fanout],
        "fanout_origin_fetches": [r["origin_fetches"] for r in fanout],
        "fanout_max_origin_fetches_per_object": max(
            (r["origin_fetches"] for r in fanout), default=0
        ),
        "fanout_errors": sum(r["errors"] for r in fanout),
        "parent_failures": {k: len(v) for k, v in failovers.items()},
        "crowd_viewers": crowd,
        "crowd_rep": args.rep,
        "tier_dry_viewers": tier["dry_viewers"],
        "tier_late_chunk_share": tier["late_chunk_share"],
        "tier_first_byte_p50_ms": tier["first_byte"]["p50_ms"],
        "tier_first_byte_p99_ms": tier["first_byte"]["p99_ms"],
        "tier_chunk_p50_ms": tier["chunk"]["p50_ms"],
        "tier_chunk_p99_ms": tier["chunk"]["p99_ms"],
        "tier_origin_requests": tier["origin_requests"],
        "baseline_dry_viewers": direct["dry_viewers"],
        "baseline_late_chunk_share": direct["late_chunk_share"],
        "baseline_first_byte_p50_ms": direct["first_byte"]["p50_ms"],
        "baseline_first_byte_p99_ms": direct["first_byte"]["p99_ms"],
        "baseline_chunk_p50_ms": direct["chunk"]["p50_ms"],
        "baseline_chunk_p99_ms": direct["chunk"]["p99_ms"],
        "baseline_origin_requests": direct["origin_requests"],
        "origin_requests_ratio": ratio(tier["origin_requests"], direct["origin_requests"]),
        "chunk_p99_ratio": ratio(tier["chunk"]["p99_ms"], direct["chunk"]["p99_ms"]),
        "tier_client_loop_lag_p99_ms": tier["client_loop_lag"]["p99_ms"],
        "baseline_client_loop_lag_p99_ms": direct["client_loop_lag"]["p99_ms"],
        "tier_cpu_share": {"client": tier["client_cpu_share"], **tier["cpu_share"]},
        "baseline_cpu_share": {"client": direct["client_cpu_share"], **direct["cpu_share"]},
    }
    print_result(result)


if __name__ == "__main__":
    main()
