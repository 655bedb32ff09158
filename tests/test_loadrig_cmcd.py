"""The virtual viewers' CMCD is what the edges' parser takes, key for key."""

from __future__ import annotations

from kernel.cmcd import CmcdStats, parse_query, split_query
from loadrig.cmcd import cmcd_query


def test_a_viewers_query_parses_back_to_its_state() -> None:
    query = cmcd_query(
        sid="vp-7-1700000000000",
        kind="video",
        bitrate_bps=3_200_000,
        buffer_s=1.26,
        throughput_bps=48_149_000,
        startup=True,
        starved=True,
    )
    target, raw = split_query(f"/live/c/1/v1/7.m4s?{query}".encode())
    assert target == b"/live/c/1/v1/7.m4s" and raw is not None
    stats = CmcdStats()
    assert parse_query(raw, stats) == {
        "bl": 1300,
        "br": 3200,
        "bs": True,
        "mtp": 48100,
        "ot": "v",
        "sf": "d",
        "sid": "vp-7-1700000000000",
        "st": "l",
        "su": True,
        "v": 1,
    }
    assert stats.dropped == 0
    calm = cmcd_query(
        sid="s",
        kind="audio",
        bitrate_bps=128_000,
        buffer_s=0,
        throughput_bps=0,
        startup=False,
        starved=False,
    )
    found = parse_query(calm.removeprefix("CMCD=").encode(), stats)
    assert "bs" not in found and "su" not in found and found["ot"] == "a"
