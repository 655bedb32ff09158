"""The weighted split a canary rides on: an exact, even share of first attempts; retries
and hedges never on the canary; the split file followed while the process runs."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path

import grpc

from kernel.rpc.resilience.balancer import Balancer
from kernel.rpc.resilience.split import SmoothWeighted, SplitFile, read_split, write_split


def test_smooth_weighted_gives_the_exact_share_evenly() -> None:
    smooth = SmoothWeighted()
    picks = [smooth.choose(["a", "b", "c"], {"c": 0.01}) for _ in range(2010)]
    assert Counter(picks) == {"a": 1000, "b": 1000, "c": 10}
    positions = [n for n, p in enumerate(picks) if p == "c"]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert gaps == {201}  # one in every 201, never two close together


def test_the_split_file_round_trips_and_drops_zero_weights(tmp_path: Path) -> None:
    path = str(tmp_path / "split.json")
    assert read_split(path) == {}
    write_split(path, {"playback": {"10.0.0.2:1": 0.005, "10.0.0.3:1": 0.0}})
    assert read_split(path) == {"playback": {"10.0.0.2:1": 0.005}}


def test_a_split_file_is_looked_at_no_more_than_every_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "split.json")
    now = [0.0]
    view = SplitFile(path, every_s=1.0, clock=lambda: now[0])
    assert view.extra("playback") == {}
    write_split(path, {"playback": {"c:1": 0.5}})
    now[0] = 0.5
    assert view.extra("playback") == {}  # not looked at yet
    now[0] = 1.0
    assert view.extra("playback") == {"c:1": 0.5}
    os.remove(path)
    now[0] = 2.0
    assert view.extra("playback") == {}


async def test_the_balancer_follows_the_split_and_keeps_retries_off_the_canary(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "split.json")
    now = [0.0]
    balancer = Balancer("base:1", lambda target: grpc.aio.insecure_channel(target))
    balancer.split = SplitFile(path, every_s=0.0, clock=lambda: now[0])
    balancer.set_addresses(["base:1", "base:2"])
    try:
        write_split(path, {"base:1": {"canary:1": 0.02}})
        firsts = Counter(balancer.pick().address for _ in range(2020))
        assert firsts == {"base:1": 1000, "base:2": 1000, "canary:1": 20}
        # a retry after a failure (or a hedge) goes to the other resolved instance
        again = {balancer.pick({"base:1"}).address for _ in range(300)}
        assert again == {"base:2"}
        assert balancer.pick({"base:1", "base:2"}) is None
        write_split(path, {})  # rolled back
        assert {balancer.pick().address for _ in range(300)} == {"base:1", "base:2"}
        assert "canary:1" not in balancer.endpoints
    finally:
        await balancer.close()
