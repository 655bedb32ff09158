"""Benchmark: an in-progress LL-DASH segment behind the cache, livemesh edge vs nginx.

Starts its own Redis (embedded), origin and live channel (default ladder: D = 2 s,
C = 0.2 s), then, in front of that one origin, a ``livemesh edge`` (no tokens) and
Debian's nginx with ``proxy_cache`` + ``proxy_cache_lock on`` configured as
``bench/edge_cached.py`` does (its configuration and set-up helpers, one worker);
both servers are pinned to CPU 0 (one process / one worker each).

For several successive segments of ``--rep``, alternating edge / nginx (the order
flips every round, so a drift of the machine's load hurts both alike), N clients
(1,000; ``--quick``: 200) each open a connection, then all ask for the *next* segment
``--lead`` seconds before it starts (its first chunk is due one chunk later; the origin
holds such a request until that chunk exists), then read it to its end.  Per node and segment:

- **first byte**: arrival of a client's first body byte minus the production of the
  segment's first chunk (the Redis server's clock in the chunk's event id);
- **last byte**: arrival of its last body byte minus the same moment, and minus the
  production of the segment's last chunk;
- **origin requests per segment** (the origin's own ``/metrics``).

Target (DESIGN.md §5, issue 5 (b)): the edge's first byte within one chunk duration
(200 ms) of production (p99); nginx waits for the whole segment (its lock waiters poll
every 500 ms until the cache entry is complete).  Bounded: a fixed number of rounds,
a per-crowd timeout, loopback only.  Run: ``python bench/edge_live.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from _harness import (
    LiveViewer,
    LoopLag,
    Procs,
    chunk_times,
    edge_fetches,
    free_port,
    loadavg,
    next_segment,
    origin_requests,
    print_result,
    raise_fd_limit,
    ratio,
    stored_at,
    wait_live,
    wait_ready,
)
from edge_cached import NGINX_CONF, SERVER_CPUS, ensure_tools

from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.stats import summary_ms

CHANNEL = "edgelive"
SEGMENT_MS = 2000  # the channel's defaults (D, C)
CHUNK_MS = 200
CROWD_TIMEOUT_S = 30.0


def start_nginx(procs: Procs, tmp: str, origin: str) -> str:
    """nginx (one worker, pinned like the edge) caching ``origin``; its base URL."""
    origin_port = urlsplit(origin).port
    port = free_port()
    conf = Path(tmp) / "nginx.conf"
    user = "user root root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, origin=origin_port, user=user))
    base = f"http://127.0.0.1:{port}"
    procs.start("nginx", ["nginx", "-p", tmp, "-c", str(conf)], cpus=SERVER_CPUS)
    if not wait_ready(f"{base}/time", threading.Event(), 10):
        raise SystemExit(f"nginx did not start: {(Path(tmp) / 'error.log').read_text()}")
    return base


async def epoch_start_ms(redis_url: str) -> int:

    from live.state import ChannelStore

    redis = redis_client(redis_url)
    try:
        epoch = await ChannelStore(redis, CHANNEL).current_epoch()
    finally:
        await redis.aclose()
    assert epoch is not None
    return epoch.start_ms


async def crowd(base: str, prefix: str, count: int, number: int, due: float) -> list[LiveViewer]:
    """``count`` clients, each on its own connection (opened beforehand, so that opening
    1,000 of them does not delay the requests), read segment ``number``, all asking at
    wall time ``due``."""
    url = urlsplit(base)
    assert url.hostname is not None and url.port is not None
    viewers = [LiveViewer(url.hostname, url.port, prefix) for _ in range(count)]
    await asyncio.wait_for(asyncio.gather(*(v.connect() for v in viewers)), CROWD_TIMEOUT_S)
    await asyncio.sleep(max(0.0, due - time.time()))
    await asyncio.wait_for(
        asyncio.gather(*(v.play(number, number) for v in viewers)), CROWD_TIMEOUT_S
    )
    return viewers


def figures(viewers: list[LiveViewer], number: int, times: dict[int, list[int]]) -> dict:
    """First/last byte (ms) of every client that got the whole segment, against production."""
    chunks = times.get(number, [])
    out: dict[str, object] = {"errors": sum(bool(v.errors) for v in viewers)}
    out["error_sample"] = [e for v in viewers for e in v.errors][:2]
    if not chunks:
        out["first_byte"] = out["last_byte"] = out["after_last_chunk"] = summary_ms([])
        return out
    first_ms, last_ms = chunks[0] + 0.5, chunks[-1] + 0.5  # event ids are whole ms
    ok = [v for v in viewers if not v.errors and number in v.last_bytes]
    out["first_byte_all"] = [v.segments[0][2] * 1000 - first_ms for v in ok]
    out["first_byte"] = summary_ms(out["first_byte_all"])
    out["last_byte"] = summary_ms([v.last_bytes[number] * 1000 - first_ms for v in ok])
    out["after_last_chunk"] = summary_ms([v.last_bytes[number] * 1000 - last_ms for v in ok])
    requested = sorted(v.segments[0][1] for v in ok)
    if requested:  # how long before production the median client's request went out
        out["requested_before_ms"] = round(first_ms - requested[len(requested) // 2] * 1000, 1)
    out["chunks"] = len(chunks)
    out["same_bytes"] = len({v.bytes for v in ok}) <= 1
    return out


async def measure(
    procs: Procs,
    redis_url: str,
    origin: str,
    nodes: dict[str, str],
    rep: str,
    count: int,
    rounds: int,
    lead_s: float,
) -> dict[str, list[dict]]:
    epoch = await wait_live(redis_url, CHANNEL, rep)
    start_ms = await epoch_start_ms(redis_url)
    prefix = f"/live/{CHANNEL}/{epoch}/{rep}"
    await next_segment(redis_url, CHANNEL, epoch, rep)  # let the channel settle a segment
    rows: dict[str, list[dict]] = {name: [] for name in nodes}
    for r in range(rounds):
        order = list(nodes) if r % 2 == 0 else list(reversed(nodes))
        for name in order:
            number = await next_segment(redis_url, CHANNEL, epoch, rep)
            due = (start_ms + number * SEGMENT_MS) / 1000 - lead_s
            o0 = origin_requests(origin)
            f0 = edge_fetches(nodes["edge"])
            with LoopLag() as lag:
                viewers = await crowd(nodes[name], prefix, count, number, due)
            await asyncio.sleep(0.2)  # the origin counts a response once it has ended
            row = figures(
                viewers, number, chunk_times(await stored_at(redis_url, CHANNEL, epoch, rep))
            )
            row["segment"] = number
            row["origin_requests"] = origin_requests(origin) - o0 - 1  # less the 1st scrape
            if name == "edge":
                row["edge_upstream_fetches"] = edge_fetches(nodes["edge"]) - f0
            row["client_loop_lag_p99_ms"] = summary_ms(lag.samples)["p99_ms"]
            rows[name].append(row)
            fb, lb = row["first_byte"], row["last_byte"]
            print(
                f"  {name:5} segment {number}: first byte p50 {fb['p50_ms']} p99 {fb['p99_ms']} "
                f"max {fb['max_ms']} ms, last byte p50 {lb['p50_ms']} p99 {lb['p99_ms']} ms "
                f"after the first chunk's production ({fb['count']}/{count} clients, "
                f"{row.get('chunks')} chunks, request {row.get('requested_before_ms')} ms "
                f"before it); origin requests {row['origin_requests']}; errors {row['errors']} "
                f"{row['error_sample']}; client loop lag p99 {row['client_loop_lag_p99_ms']} ms",
                flush=True,
            )
            procs.check_alive()
    return rows


def pooled(rows: list[dict], key: str, stat: str) -> float:
    """The median over segments of one per-segment statistic (e.g. first byte p99)."""
    values = sorted(r[key][stat] for r in rows if r[key]["count"])
    return values[(len(values) - 1) // 2] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 clients, 2 rounds")
    parser.add_argument("--clients", type=int, default=None, help="clients per segment (1000)")
    parser.add_argument("--rounds", type=int, default=None, help="segments per node (3)")
    parser.add_argument("--rep", default="v360")
    parser.add_argument("--lead", type=float, default=0.3, help="s before the segment starts")
    args = parser.parse_args()
    count = args.clients or (200 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 3)
    ensure_tools()
    raise_fd_limit(4 * count + 1024)
    print(f"load average at start: {loadavg()}", flush=True)
    import uvloop

    with (
        EmbeddedRedis() as redis,
        tempfile.TemporaryDirectory(prefix="lm-edgelive-") as tmp,
        Procs() as procs,
    ):
        os.chmod(tmp, 0o755)
        origin = procs.origin(redis.url)
        procs.channel(CHANNEL, redis.url)
        edge = procs.edge("edge-1", "edge", [origin], tokens=False, cpus=SERVER_CPUS)
        nginx = start_nginx(procs, tmp, origin)
        nodes = {"edge": edge, "nginx": nginx}
        rows = uvloop.run(
            measure(procs, redis.url, origin, nodes, args.rep, count, rounds, args.lead)
        )
        procs.check_alive()
    print(f"load average at end: {loadavg()}")
    print(
        f"{count} clients per segment, {rounds} segments per node of {args.rep} "
        f"(D {SEGMENT_MS} ms, C {CHUNK_MS} ms), servers on CPU {SERVER_CPUS}; "
        "figures: median over segments of each segment's p50 / p99, and pooled"
    )
    result: dict[str, object] = {"clients": count, "segments_per_node": rounds, "rep": args.rep}
    for name, node_rows in rows.items():
        node = {
            "first_byte_p50_ms": pooled(node_rows, "first_byte", "p50_ms"),
            "first_byte_p99_ms": pooled(node_rows, "first_byte", "p99_ms"),
            "first_byte_max_ms": max(
                (r["first_byte"]["max_ms"] for r in node_rows if r["first_byte"]["count"]),
                default=float("nan"),
            ),
            "last_byte_p50_ms": pooled(node_rows, "last_byte", "p50_ms"),
            "last_byte_p99_ms": pooled(node_rows, "last_byte", "p99_ms"),
            "after_last_chunk_p50_ms": pooled(node_rows, "after_last_chunk", "p50_ms"),
            "after_last_chunk_p99_ms": pooled(node_rows, "after_last_chunk", "p99_ms"),
            "first_byte_p99_per_segment_ms": [r["first_byte"]["p99_ms"] for r in node_rows],
            "first_byte_pooled": summary_ms(
                [x for r in node_rows for x in r.get("first_byte_all", [])]
            ),
            "origin_requests_per_segment": [r["origin_requests"] for r in node_rows],
            "clients_complete": [r["first_byte"]["count"] for r in node_rows],
            "errors": sum(r["errors"] for r in node_rows),
            "same_bytes": all(r.get("same_bytes", False) for r in node_rows),
        }
        result[name] = node
        print(
            f"  {name:5}: first byte p50 {node['first_byte_p50_ms']} p99 "
            f"{node['first_byte_p99_ms']} ms (p99 per segment "
            f"{node['first_byte_p99_per_segment_ms']}, pooled {node['first_byte_pooled']}), "
            f"last byte p50 {node['last_byte_p50_ms']} p99 "
            f"{node['last_byte_p99_ms']} ms after the first chunk's production (p99 "
            f"{node['after_last_chunk_p99_ms']} ms after the last chunk's); origin requests per "
            f"segment {node['origin_requests_per_segment']}; errors {node['errors']}"
        )
    e, n = result["edge"], result["nginx"]
    assert isinstance(e, dict) and isinstance(n, dict)
    result["ratio_nginx_over_edge_first_byte_p50"] = ratio(
        n["first_byte_p50_ms"], e["first_byte_p50_ms"]
    )
    result["ratio_nginx_over_edge_first_byte_p99"] = ratio(
        n["first_byte_p99_ms"], e["first_byte_p99_ms"]
    )
    result["ratio_nginx_over_edge_last_byte_p99"] = ratio(
        n["last_byte_p99_ms"], e["last_byte_p99_ms"]
    )
    result["target_first_byte_ms"] = CHUNK_MS
    # strict: the p99 over every client of every segment, not just the median segment's
    result["target_met"] = bool(e["first_byte_pooled"]["p99_ms"] <= CHUNK_MS and not e["errors"])
    result["nginx_waits_for_segment"] = bool(n["first_byte_p50_ms"] >= SEGMENT_MS - CHUNK_MS)
    result["load_average"] = loadavg()
    print(
        f"  edge first byte p99 {e['first_byte_pooled']['p99_ms']} ms over all "
        f"{e['first_byte_pooled']['count']} client-segments (median segment's p99 "
        f"{e['first_byte_p99_ms']} ms) vs target ≤ {CHUNK_MS} ms: "
        f"{'met' if result['target_met'] else 'NOT met'}; nginx first byte p50 "
        f"{n['first_byte_p50_ms']} ms "
        f"({result['ratio_nginx_over_edge_first_byte_p50']}x the edge's)"
    )
    print_result(result)


if __name__ == "__main__":
    main()
