"""Benchmark: real players across a Redis Cluster master's death mid-event (issue 20's
cluster target: 0 lost chunks, 0 stalls beyond the buffer, failover time reported).

A real six-node cluster (3 masters, 3 replicas: ``tests/redis_cluster.py``), then the
live stack on it (``player/harness.py``: origin, the channel's packager, a shield and an
edge, all through redis-py's cluster client) and one player in Chromium with the rig's
virtual player beside it (``player/outage.py``). The master serving the channel's slot
(every key of a channel carries the hash tag ``{channel}``) is killed with SIGKILL; its
replica is promoted by the cluster itself (node timeout 1 s).

Per player: the longest stand-still of the playhead from the kill on, against the buffer
it held just before and the time the slot had no master (see :func:`met`), and against
the longest over an equal window before the kill (the baseline, same run); when it played
again and when it was back at its latency after the promotion. The failover time is from
the kill to the replica serving the slot. Lost chunks: every segment of every rendition
from the one playing at the kill to the last complete one is read back from the cluster
after the watch, and must hold all its chunks. A fresh cluster and stack per browser player (the
killed master is gone; one page at a time keeps the figures the player's).

Run: ``python bench/redis_cluster_failover.py [--quick] [--players dashjs,shaka,hlsjs]``;
``--quick``: dash.js alone, 10 s watched. Ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import print_result
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.epoch import Position
from kernel.redis_server import shared_client
from live.state import ChannelStore
from player.harness import LiveStack, live_stack, serve_player
from player.outage import (
    BROWSER_PLAYERS,
    RIG_PLAYER,
    SAMPLE_S,
    longest_stand_still,
    watching,
)
from tests.redis_cluster import LocalCluster, local_cluster

CHANNEL = "failover"
STEADY_S = 4.0  # watched before the kill: the baseline window and the buffer held
FAILOVER_LIMIT_S = 30.0
POLL_S = 0.05


def failover(cluster: LocalCluster) -> tuple[float, float]:
    """Kill the master of the channel's slot; (killed at, writes taken again at), wall
    clock: the failover as the packager lives it, a write to the slot retried until one
    is taken (by the promoted replica)."""
    slot_key = "{" + CHANNEL + "}"
    master = cluster.master_of(slot_key)
    other = next(node for node in cluster.live() if node is not master)
    writer = RedisCluster(
        host="127.0.0.1",
        port=other.port,
        socket_timeout=POLL_S * 4,
        socket_connect_timeout=POLL_S * 4,
    )
    try:
        writer.set(slot_key + ":probe", "before")
        killed_at = time.time()
        master.process.kill()
        deadline = killed_at + FAILOVER_LIMIT_S
        while time.time() < deadline:
            try:
                writer.set(slot_key + ":probe", "after")
                return killed_at, time.time()
            except RedisError:
                time.sleep(POLL_S)  # the slot has no master yet
        raise RuntimeError(f"no replica took the slot within {FAILOVER_LIMIT_S} s")
    finally:
        writer.close()


async def _missing_chunks(url: str, since: dict[str, Position]) -> dict[str, list[int]]:
    """Per rendition, the segments from ``since``'s to the last complete one that lack a
    chunk (read back from the cluster)."""
    redis = shared_client(url)
    try:
        store = ChannelStore(redis, CHANNEL)
        epoch = await store.current_epoch()
        config = await store.get_config()
        assert epoch is not None and config is not None
        per_segment = config.segment_ms // config.chunk_ms
        missing: dict[str, list[int]] = {}
        for rep, start in since.items():
            now = await store.position(epoch.id, rep)
            assert now is not None
            last_whole = now.segment if now.complete else now.segment - 1
            for segment in range(start.segment, last_whole + 1):
                chunks, _ = await store.chunks(epoch.id, rep, segment)
                if len(chunks) != per_segment:
                    missing.setdefault(rep, []).append(segment)
        return missing
    finally:
        await redis.aclose()


async def _positions(url: str) -> dict[str, Position]:
    redis = shared_client(url)
    try:
        store = ChannelStore(redis, CHANNEL)
        epoch = await store.current_epoch()
        assert epoch is not None
        found = {r.id: await store.position(epoch.id, r.id) for r in epoch.representations}
        return {rep: p for rep, p in found.items() if p is not None}
    finally:
        await redis.aclose()


def _apart(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` on a loop of its own thread (playwright's sync API holds one here)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def one_run(player_url: str, player: str, watch_s: float) -> dict[str, Any]:
    """A fresh cluster and stack, ``player`` and the rig's watching, one master killed."""
    for cluster in local_cluster():
        with live_stack(CHANNEL, redis_url=cluster.url) as stack:
            return _watched_failover(cluster, stack, player_url, player, watch_s)
    raise AssertionError("the cluster did not start")


def _watched_failover(
    cluster: LocalCluster, stack: LiveStack, player_url: str, player: str, watch_s: float
) -> dict[str, Any]:
    with watching(stack, player_url, (player,)) as watch:
        watch.sample_for(STEADY_S)
        before = _apart(_positions(cluster.url))
        killed_at, promoted_at = failover(cluster)
        watch.sample_for(watch_s)
        resumes = {r.player: r for r in watch.resumes(killed_at, promoted_at)}
        samples = watch.all_samples()
    survivor = f"redis+cluster://127.0.0.1:{cluster.live()[0].port}"  # the url's may be dead
    missing = _apart(_missing_chunks(survivor, before))
    players = {}
    for name, series in samples.items():
        held = [s.buffer for s in series if s.t <= killed_at and s.buffer is not None]
        steady = [s for s in series if killed_at - STEADY_S <= s.t <= killed_at]
        players[name] = {
            **resumes[name].figures(),  # stall_s: the longest stand-still from the kill on
            "baseline_stall_s": round(longest_stand_still(steady, killed_at - STEADY_S), 3),
            "buffer_before_s": round(held[-1], 3) if held else None,
            "within_buffer": bool(held) and resumes[name].stall_s <= held[-1],
        }
    return {
        "failover_s": round(promoted_at - killed_at, 3),
        "lost_chunks_segments": missing,
        "players": players,
    }


def met(run: dict[str, Any]) -> bool:
    """No chunk lost, and no player stood still longer than the slot had no master (plus
    one sample): a buffer bridges what it holds and no more, so a stall as long as the
    promotion less the buffer is the cluster's (its node timeout), and anything beyond it
    would be ours. ``within_buffer`` says per player whether the buffer bridged it all."""
    if run["lost_chunks_segments"]:
        return False
    bound = run["failover_s"] + SAMPLE_S
    return all(figures["stall_s"] <= bound for figures in run["players"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="dash.js alone, 10 s watched")
    parser.add_argument("--players", default=",".join(BROWSER_PLAYERS))
    args = parser.parse_args()
    players = ["dashjs"] if args.quick else args.players.split(",")
    watch_s = 10.0 if args.quick else 20.0
    runs: dict[str, Any] = {}
    with serve_player() as player_url:
        for player in players:
            run = one_run(player_url, player, watch_s)
            runs[player] = {**run, "met": met(run)}
            for name, figures in run["players"].items():
                print(f"{player:7} {name:8} failover {run['failover_s']:.2f} s  "
                      f"stall {figures['stall_s']:.2f} s "
                      f"(buffer {figures['buffer_before_s']}, baseline "
                      f"{figures['baseline_stall_s']:.2f} s)  "
                      f"resumed +{figures['resumed_after_s']} s  "
                      f"at target +{figures['at_target_after_s']} s  "
                      f"lost {run['lost_chunks_segments'] or 0}")  # fmt: skip
    print_result(
        {
            "bench": "redis_cluster_failover",
            "runs": runs,
            "rig_player": RIG_PLAYER,
            "met": all(r["met"] for r in runs.values()),
        }
    )


if __name__ == "__main__":
    main()
