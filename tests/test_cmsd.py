"""CMSD (CTA-5006) out of the edges: the header values are RFC 8941 structured fields
(read back with the ``http-sfv`` parser), and the edge sends them on hits, misses and
held requests, readable by a browser across origins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import http_sfv
import pytest

from edge.metrics import Counters
from edge.responses import Cmsd
from kernel.cmsd import dynamic_value, held_value, object_type, sf_string, static_value
from tests.test_edge_node import IMMUTABLE, SEG, Parent, _until, start_node

MPD = "/live/c/manifest.mpd"


def dictionary(*lines: str) -> dict[str, object]:
    parsed = http_sfv.Dictionary()
    parsed.parse(", ".join(lines).encode())  # several field lines are one, comma-joined
    return {key: item.value for key, item in parsed.items()}


def members(value: str) -> list[tuple[str, dict[str, object]]]:
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return [(m.value, dict(m.params)) for m in parsed]


def test_static_values_are_dictionaries_of_the_objects_kind() -> None:
    assert static_value("edge-1", "/live/demo/7/v720/12.m4s") == 'n="edge-1",ot=v,st=l'
    assert dictionary(static_value("edge-1", "/live/demo/7/a128/12.m4s")) == {
        "n": "edge-1",
        "ot": "a",
        "st": "l",
    }
    assert dictionary(static_value("e", "/vod/t1/v1/init.mp4"))["ot"] == "i"
    assert dictionary(static_value("e", "/vod/t1/manifest.mpd")) == {"n": "e", "ot": "m", "st": "v"}
    assert dictionary(static_value("e", "/time")) == {"n": "e", "ot": "o"}
    assert object_type("/live/c/hls/v1.m3u8") == "m"
    assert dictionary(static_value("e", "/live/c/manifest.mpd"), held_value(120))["ht"] == 120


def test_dynamic_values_are_list_members_with_the_nodes_keys() -> None:
    value = dynamic_value("edge-1", duress=True, etp_kbps=9600, rd_ms=3)
    assert value == '"edge-1";du;etp=9600;rd=3'
    assert members(value) == [("edge-1", {"du": True, "etp": 9600, "rd": 3})]
    calm = dynamic_value("edge-1", duress=False, etp_kbps=None, rd_ms=0)
    # an upstream hop's member after ours: the list a player reads
    assert members(f'{calm}, "shield-1";etp=100000') == [
        ("edge-1", {"rd": 0}),
        ("shield-1", {"etp": 100000}),
    ]


def test_node_names_are_escaped_or_refused() -> None:
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert members(dynamic_value('a"b', duress=False, etp_kbps=None, rd_ms=None))[0][0] == 'a"b'
    with pytest.raises(ValueError):
        sf_string("caf\u00e9")


def test_duress_and_throughput_follow_the_nodes_connections_and_egress() -> None:
    counters = Counters()
    open_, now = [1], [100.0]
    cmsd = Cmsd("e", counters, lambda: open_[0], capacity=10, monotonic=lambda: now[0])
    cmsd.dynamic(b"Date: 1\r\n")
    counters.bytes_out += 1_000_000
    open_[0], now[0] = 9, 102.0
    line = cmsd.dynamic(b"Date: 2\r\n").decode()
    assert line.startswith("CMSD-Dynamic: ") and line.endswith("\r\n")
    ((node, params),) = members(line.removeprefix("CMSD-Dynamic: ").strip())
    assert node == "e" and params["du"] is True and params["rd"] == 0
    assert params["etp"] == 8000 // 2 // 9  # 8,000 kbit in 2 s over 9 connections
    open_[0], now[0] = 3, 103.0
    ((_, calm),) = members(cmsd.dynamic(b"Date: 3\r\n").decode()[14:].strip())
    assert "du" not in calm and calm["etp"] == 0  # nothing sent since
    assert cmsd.dynamic(b"Date: 2\r\n") is cmsd.hit_line  # once per Date line


@pytest.fixture
async def parent() -> AsyncIterator[Parent]:
    p = Parent()
    p.static[SEG] = (200, b"segment", IMMUTABLE)
    await p.start()
    yield p
    await p.stop()


async def test_the_edge_sends_cmsd_on_misses_hits_and_held_requests(parent: Parent) -> None:
    node, url = await start_node(parents=(parent.url,), name="edge-7")
    try:
        async with aiohttp.ClientSession() as http:
            for tag in ("MISS", "HIT"):
                answer = await http.get(url + SEG)
                assert answer.headers["X-Cache"] == tag and await answer.read() == b"segment"
                assert dictionary(answer.headers["CMSD-Static"]) == {
                    "n": "edge-7",
                    "ot": "v",
                    "st": "l",
                }
                ((name, params),) = members(answer.headers["CMSD-Dynamic"])
                assert name == "edge-7" and "du" not in params and "rd" in params
                exposed = answer.headers["Access-Control-Expose-Headers"]
                assert {"CMSD-Static", "CMSD-Dynamic"} <= set(exposed.split(", "))
            parent.mpd_gate = asyncio.Event()  # the parent holds the manifest
            held = asyncio.ensure_future(http.get(url + MPD))
            await _until(lambda: any(k.endswith(".mpd") for k in node.inflight))
            await asyncio.sleep(0.2)  # the hold
            parent.mpd_gate.set()
            answer = await held
            assert answer.status == 200
            static = dictionary(*answer.headers.getall("CMSD-Static"))
            assert static["ot"] == "m" and isinstance(static["ht"], int) and static["ht"] >= 200
            ((_, params),) = members(answer.headers["CMSD-Dynamic"])
            assert isinstance(params["rd"], int) and params["rd"] >= 200
    finally:
        await node.close()
