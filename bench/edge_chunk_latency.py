"""Benchmark: chunk latency from the packager to bytes leaving the edge, through edge + shield.

Starts its own Redis (embedded), origin, live channel (default ladder), one shield and
one edge (tokens on) as separate processes.  Two viewers read the same segments of
``--rep`` at the same time, each holding a request for the next segment and reading
it as it streams: one through edge → shield → origin, one straight at the origin (the
baseline, in the same run).  Each CMAF chunk's arrival (its ``mdat`` complete on the
client) is compared with the moment the packager stored it: the Redis server's own
timestamp in the chunk's event id (as ``bench/chunk_latency.py`` does).

Target (DESIGN.md §7): the tier adds at most 30 ms at p99.  "Added" is paired per
chunk: its arrival through the tier minus its arrival straight from the origin, so a
late encoder or a stalled machine, which delays both, cancels out.
Run: ``python bench/edge_chunk_latency.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

from _harness import (
    LiveViewer,
    Procs,
    chunk_times,
    loadavg,
    next_segment,
    print_result,
    ratio,
    stored_at,
    wait_live,
)

from kernel.redis_server import EmbeddedRedis
from kernel.stats import summary_ms
from kernel.tokens import TokenSigner

CHANNEL = "chunklat"
TARGET_ADDED_P99_MS = 30.0


def viewer(base: str, prefix: str) -> LiveViewer:
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    return LiveViewer(url.hostname, url.port, prefix)


def latencies(v: LiveViewer, times: dict[int, list[int]]) -> list[float]:
    out = []
    for n, i, arrival in v.chunks:
        seg = times.get(n, [])
        if i < len(seg):
            out.append(arrival * 1000 - seg[i] - 0.5)  # ids are whole ms
    return out


async def measure(
    redis_url: str, origin: str, edge: str, rep: str, segments: int, signer: TokenSigner
) -> dict[str, dict[str, float]]:
    epoch = await wait_live(redis_url, CHANNEL, rep)
    token = signer.sign(f"/live/{CHANNEL}/", "bench-session", 3600)
    await next_segment(redis_url, CHANNEL, epoch, rep)  # let the channel settle a segment
    first = await next_segment(redis_url, CHANNEL, epoch, rep)
    tier = viewer(edge, f"/t/{token}/live/{CHANNEL}/{epoch}/{rep}")
    direct = viewer(origin, f"/live/{CHANNEL}/{epoch}/{rep}")
    last = first + segments - 1
    await asyncio.gather(tier.play(first, last, True), direct.play(first, last, True))
    for name, v in (("tier", tier), ("origin", direct)):
        if v.errors:
            print(f"  {name} viewer: {len(v.errors)} segment(s) failed, e.g. {v.errors[0]}")
    times = chunk_times(await stored_at(redis_url, CHANNEL, epoch, rep))
    out = {
        "tier": summary_ms(latencies(tier, times)),
        "origin": summary_ms(latencies(direct, times)),
    }
    # paired: the same chunk's arrival through the tier minus straight from the origin
    straight = {(n, i): t for n, i, t in direct.chunks}
    paired = [(t - straight[(n, i)]) * 1000 for n, i, t in tier.chunks if (n, i) in straight]
    out["paired"] = summary_ms(paired)
    out["tier"]["failed_segments"] = len(tier.errors)
    out["origin"]["failed_segments"] = len(direct.errors)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--rep", default="v720")
    args = parser.parse_args()
    segments = 5 if args.quick else 30
    print(f"load average at start: {loadavg()}", flush=True)
    import uvloop

    with EmbeddedRedis() as redis, Procs() as procs:
        origin = procs.origin(redis.url)
        procs.channel(CHANNEL, redis.url)
        shield = procs.edge("shield-1", "shield", [origin], tokens=False)
        edge = procs.edge("edge-1", "edge", [shield], [origin])
        figures = uvloop.run(measure(redis.url, origin, edge, args.rep, segments, procs.signer))
        procs.check_alive()
    print(f"load average at end: {loadavg()}")
    tier, direct, paired = figures["tier"], figures["origin"], figures["paired"]
    added_p50, added_p99 = paired["p50_ms"], paired["p99_ms"]
    print(f"chunks measured: {tier['count']} via the tier, {direct['count']} direct ({args.rep})")
    print(
        f"packager → edge → client  : p50 {tier['p50_ms']} ms, p99 {tier['p99_ms']} ms, "
        f"max {tier['max_ms']} ms"
    )
    print(
        f"packager → origin → client: p50 {direct['p50_ms']} ms, p99 {direct['p99_ms']} ms, "
        f"max {direct['max_ms']} ms (baseline)"
    )
    print(
        f"added by edge + shield    : p50 {added_p50} ms, p99 {added_p99} ms, max "
        f"{paired['max_ms']} ms per chunk (tier arrival minus origin arrival of the same "
        f"chunk; target p99 ≤ {TARGET_ADDED_P99_MS:g} ms); difference of the p99s "
        f"{round(tier['p99_ms'] - direct['p99_ms'], 2)} ms"
    )
    print_result(
        {
            "tier_p50_ms": tier["p50_ms"],
            "tier_p99_ms": tier["p99_ms"],
            "tier_max_ms": tier["max_ms"],
            "baseline_origin_p50_ms": direct["p50_ms"],
            "baseline_origin_p99_ms": direct["p99_ms"],
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
            "added_max_ms": paired["max_ms"],
            "p99_difference_ms": round(tier["p99_ms"] - direct["p99_ms"], 2),
            "p99_ratio": ratio(tier["p99_ms"], direct["p99_ms"]),
            "chunks": tier["count"],
            "failed_segments_tier": tier["failed_segments"],
            "failed_segments_origin": direct["failed_segments"],
            "rep": args.rep,
        }
    )


if __name__ == "__main__":
    main()
