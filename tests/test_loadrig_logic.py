"""loadrig's pure parts: buffer model, rung choice, scale model, MPD view, box scanner,
access-log parsing and replay plans, aggregation, worker shares (no sockets)."""

from __future__ import annotations

import asyncio
import math
import struct
import time

import pytest

from kernel.isobmff import NTP_EPOCH_OFFSET_S, ChunkScanner, read_prft_wallclock_ms
from kernel.stats import percentile, spread
from loadrig.abr import BufferModel, ThroughputEstimate, choose_rung
from loadrig.chaos import livemesh_argv, names_of
from loadrig.looplag import LoopLag
from loadrig.manifest import parse_http_date_ms, parse_manifest
from loadrig.press_play import gateway_error
from loadrig.replay import media_key, parse_line, rebase, requests_per_object, schedule
from loadrig.report import cdf, figures, progress_line, rates, rig_line, terminal_summary
from loadrig.results import RIG_LAG_WARN_MS, rig_check, summarise
from loadrig.scale import Capacity, EventShape, parse_mix, plan
from loadrig.scheduler import arrivals, share, stop_all

LADDER = [("v720", 2_500_000), ("v480", 1_200_000), ("v360", 600_000)]


# -- buffer model -------------------------------------------------------------------------


def test_playback_starts_at_the_live_point_and_a_stall_is_timed() -> None:
    b = BufferModel(live_delay_s=0.5, start_buffer_s=0.25, resume_buffer_s=0.25, catchup_rate=1.0)
    b.on_media(9.5, now=100.0, live_edge=10.0)  # start point: 10.0 - 0.5
    assert b.playhead is None and b.start_point == 9.5
    b.on_media(9.75, now=100.25, live_edge=10.25)
    assert b.playing and b.playhead == 9.5 and b.started_at == 100.25
    assert b.latency(10.25) == 0.75 and b.level == 0.25
    b.advance(100.5, 10.5)  # plays the quarter second it has
    assert b.playing and b.playhead == 9.75 and b.level == 0.0
    b.advance(101.0, 11.0)  # nothing new: stalled since 100.5
    assert not b.playing and b.stall_since == 100.5
    b.on_media(9.875, now=101.25, live_edge=11.25)  # not enough to resume
    assert not b.playing
    b.on_media(10.0, now=101.5, live_edge=11.5)
    assert b.playing and b.stalls == [1.0] and b.longest_stall == 1.0


def test_an_ongoing_stall_counts_when_the_viewer_leaves() -> None:
    b = BufferModel(live_delay_s=0.5, start_buffer_s=0.0, resume_buffer_s=0.25, catchup_rate=1.0)
    b.on_media(10.0, now=0.0, live_edge=10.0)
    b.finish(now=2.0, live_edge=12.0)  # 0.5 s of media, then 1.5 s dry
    assert b.stalls == [1.5]


def test_catch_up_brings_latency_back_towards_the_target() -> None:
    b = BufferModel(live_delay_s=0.5, start_buffer_s=0.0, catchup_rate=1.04)
    b.on_media(8.0, now=0.0, live_edge=10.0)  # starts 2 s behind (start point 9.5 > 8.0?)
    assert b.playhead is None  # no media at the start point yet
    b.on_media(10.0, now=0.0, live_edge=10.0)
    b.playhead = 8.0  # as after a long stall: 2 s behind
    for step in range(1, 11):
        b.on_media(10.0 + step, now=float(step), live_edge=10.0 + step)
    latency = b.latency(20.0)
    assert latency is not None and latency == pytest.approx(2.0 - 10 * 0.04)


# -- rung choice ----------------------------------------------------------------------------


def test_rung_choice_by_throughput_device_and_buffer() -> None:
    assert choose_rung(LADDER, 0.0, 1.0) == "v360"  # nothing known yet: the lowest
    assert choose_rung(LADDER, 3_000_000, 1.0) == "v720"  # 0.9 * 3 Mb/s fits 2.5
    assert choose_rung(LADDER, 2_000_000, 1.0) == "v480"
    assert choose_rung(LADDER, 10e6, 1.0, max_rung="v480") == "v480"
    assert choose_rung(LADDER, 10e6, 0.05, "v720", panic_buffer_s=0.1) == "v480"
    assert choose_rung(LADDER, 10e6, 0.05, "v360", panic_buffer_s=0.1) == "v360"
    with pytest.raises(ValueError, match="v1080"):
        choose_rung(LADDER, 1.0, 1.0, max_rung="v1080")


def test_throughput_estimate_is_smoothed_and_capped() -> None:
    est = ThroughputEstimate(alpha=0.5, cap_bps=1_200_000)
    assert est.bps == 1_200_000  # the link's cap before any sample
    est.add(100_000, 0.01)  # 80 Mb/s burst, capped
    assert est.bps == 1_200_000
    free = ThroughputEstimate(alpha=0.5)
    free.add(1000, 0.008)  # 1 Mb/s
    free.add(3000, 0.008)  # 3 Mb/s
    assert free.bps == pytest.approx(2_000_000)


# -- scale model ------------------------------------------------------------------------------


def test_scale_model_on_a_hand_checked_case() -> None:
    event = EventShape(
        viewers=1_000_000,
        ladder={"v2": 2_000_000, "v1": 1_000_000, "a": 100_000},
        mix={"v2": 0.5, "v1": 0.5},
        segment_s=2.0,
        manifest_refresh_s=1.0,
    )
    cap = Capacity(
        edge_viewers_per_core=1000, edge_cores=10, edge_egress_bps=10e9,
        shield_requests_per_core=100, shield_cores=1, shield_egress_bps=31e9,
        headroom=0.25, regions=2,
    )  # fmt: skip
    out = plan(event, cap)
    assert out.mean_bitrate_bps == 1_600_000  # 0.5*2 + 0.5*1 Mb/s video + 0.1 audio
    assert out.viewer_egress_bps == 1.6e12
    # per edge: min(1000*10 = 10,000 by CPU, 10 Gb/s / 1.6 Mb/s = 6,250 by NIC) = 6,250
    assert out.edges == 200  # 1e6 / 6250 = 160, * 1.25
    # per edge from its shield: 3 rungs / 2 s + 1 MPD/s = 2.5 req/s; 3.1 Mb/s
    # edges per shield: min(31 Gb/s / 3.1 Mb/s = 10,000, 100*1 / 2.5 = 40) = 40
    assert out.shields == 7  # ceil(200 / 40 * 1.25 = 6.25)
    assert out.shield_requests_per_s == 500.0
    assert out.edge_to_shield_bps == pytest.approx(620e6)
    assert out.origin_requests_per_s == 17.5  # 7 shields * 2.5
    assert out.origin_egress_bps == pytest.approx(21.7e6)
    assert any("= 6,250" in step for step in out.steps)


def test_scale_model_floors_shields_at_the_regions_and_checks_the_mix() -> None:
    out = plan(EventShape(viewers=10), Capacity(regions=10))
    assert out.edges == 1 and out.shields == 10
    with pytest.raises(ValueError, match="add up to 1"):
        plan(EventShape(mix={"v720": 0.5}), Capacity())
    with pytest.raises(ValueError, match="not in the ladder"):
        plan(EventShape(mix={"v1080": 1.0}), Capacity())
    assert parse_mix("v720=0.5, v360=0.5") == {"v720": 0.5, "v360": 0.5}
    with pytest.raises(ValueError, match="rung=share"):
        parse_mix("v720")


# -- the player's view of the MPD and of the bytes ---------------------------------------------

MPD = """<?xml version='1.0' encoding='UTF-8'?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
     availabilityStartTime="2026-11-25T17:03:28.592Z">
  <Period id="1795626208592" start="PT0S">
    <AdaptationSet id="1" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="15360" duration="30720" startNumber="0"
        media="1795626208592/$RepresentationID$/$Number$.m4s"
        initialization="1795626208592/$RepresentationID$/init.mp4"
        availabilityTimeOffset="1.8" availabilityTimeComplete="false"/>
      <Representation id="v720" bandwidth="2500000"/>
      <Representation id="v360" bandwidth="600000"/>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4">
      <SegmentTemplate timescale="48000" duration="96000" startNumber="0"
        media="1795626208592/$RepresentationID$/$Number$.m4s"
        initialization="1795626208592/$RepresentationID$/init.mp4"
        availabilityTimeOffset="1.8"/>
      <Representation id="a128" bandwidth="128000"/>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="http://127.0.0.1:1/time"/>
</MPD>"""


def test_manifest_view() -> None:
    mpd = parse_manifest(MPD)
    assert mpd.ast_s == 1795626208.592
    assert mpd.segment_s == 2.0 and mpd.chunk_s == 0.2
    assert mpd.video.rungs == (("v720", 2_500_000), ("v360", 600_000))
    assert mpd.video.media_path("v360", 7) == "1795626208592/v360/7.m4s"
    assert mpd.audio is not None and mpd.audio.init_path("a128") == "1795626208592/a128/init.mp4"
    assert mpd.time_urls == ("http://127.0.0.1:1/time",)
    assert mpd.segment_available_s(10) == pytest.approx(1795626208.592 + 20.2)
    assert parse_http_date_ms("2026-11-25T17:03:28.592Z\n") == 1795626208592
    with pytest.raises(ValueError, match="dynamic"):
        parse_manifest(MPD.replace('type="dynamic"', 'type="static"'))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _prft(ms: int) -> bytes:
    seconds, millis = divmod(ms, 1000)
    ntp = ((seconds + NTP_EPOCH_OFFSET_S) << 32) | (millis << 32) // 1000
    return _box(b"prft", b"\x01\0\0\0" + struct.pack(">IQQ", 1, ntp, 0))


def test_chunk_scanner_reports_chunks_with_their_prft_across_any_split() -> None:
    chunk = _prft(1_795_626_208_592) + _box(b"moof", b"\0" * 40) + _box(b"mdat", b"\xaa" * 300)
    # a chunk with no prft, its mdat with a 64-bit size
    bare = _box(b"moof", b"\0" * 40) + struct.pack(">I4sQ", 1, b"mdat", 16 + 100) + b"\xbb" * 100
    body = _box(b"styp", b"cmfs") + chunk + chunk + bare
    for step in (1, 7, 64, len(body)):
        seen: list[tuple[int, int, int]] = []

        def on_chunk(i: int, n: int, _s: float, prft: bytes, seen: list = seen) -> None:
            seen.append((i, n, read_prft_wallclock_ms(prft) if prft else 0))

        scanner = ChunkScanner(on_chunk)
        for at in range(0, len(body), step):
            scanner.feed(body[at : at + step], float(at))
        assert seen == [
            (0, len(chunk), 1_795_626_208_592),
            (1, len(chunk), 1_795_626_208_592),
            (2, len(bare), 0),
        ]


def test_chunk_scanner_times_a_chunk_from_its_first_byte_and_rejects_corrupt_boxes() -> None:
    chunk = _prft(1_795_626_208_592) + _box(b"moof", b"\0" * 40) + _box(b"mdat", b"\xaa" * 300)
    bursts: list[float] = []
    scanner = ChunkScanner(lambda _i, _n, burst_s, _p: bursts.append(burst_s))
    scanner.feed(chunk[:100], 10.0)
    scanner.feed(chunk[100:], 10.25)
    assert bursts == [0.25]
    with pytest.raises(ValueError, match="size 3"):
        ChunkScanner(lambda *_: None).feed(struct.pack(">I4s", 3, b"moof"), 0.0)


# -- access logs and replay --------------------------------------------------------------------

ORIGIN_LINE = (
    "2026-11-25 17:16:06,959 aiohttp.access 127.0.0.1 [25/Nov/2026:17:16:05 +0000] "
    '"GET /live/demo/1795626872716/v360/46.m4s HTTP/1.1" 200 40480 "-" "Python/3.11"'
)
CLF_LINE = (
    "127.0.0.1 - - [25/Nov/2026:17:16:07 +0000] "
    '"GET /t/tok/live/demo/1795626872716/v360/47.m4s HTTP/1.1" 200 - "-" "curl"'
)


def test_access_log_lines_and_requests_per_object() -> None:
    first = parse_line(ORIGIN_LINE)
    second = parse_line(CLF_LINE)
    assert first is not None and second is not None
    assert first.path.endswith("/46.m4s") and first.status == 200 and first.size == 40480
    assert second.t == 1795626967.0 and second.size == 0
    assert parse_line("2026-11-25 17:16:06,994 edge.membership WARNING registry") is None
    assert media_key(second.path) == "1795626872716/v360/47"
    assert media_key("/live/demo/manifest.mpd") is None
    counts = requests_per_object([first, first, second])
    assert counts == {"1795626872716/v360/46": 2, "1795626872716/v360/47": 1}


def test_replay_plan_is_time_scaled_and_rebased() -> None:
    first, second = parse_line(ORIGIN_LINE), parse_line(CLF_LINE)
    assert first is not None and second is not None
    planned = schedule([second, first], speed=4.0)
    assert [p for _, p in planned] == [first.path, second.path]
    assert planned[1][0] == pytest.approx((second.t - first.t) / 4)
    assert rebase(first.path, "999", 10, "/t/new") == "/t/new/live/demo/999/v360/56.m4s"
    assert rebase("/live/demo/1/a128/init.mp4", "2", 5) == "/live/demo/2/a128/init.mp4"
    with pytest.raises(ValueError, match="speed"):
        schedule([first], 0)


# -- aggregation, shares, names, progress --------------------------------------------------------


def _player(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "startup_s": 1.0, "stalls": [], "latency_s": [0.8], "delivery_ms": [50.0],
        "ttfb_ms": [10.0], "switches": 0, "failovers": 0, "errors": {}, "rungs": {"v360": 3},
        "bytes": 100, "state": "ended", "buffer_target_s": 0.6,
    }  # fmt: skip
    base.update(over)
    return base


def test_summary_counts_failovers_and_stalls_longer_than_the_buffer() -> None:
    players = [
        _player(),
        _player(failovers=1, stalls=[0.3], errors={"ConnectionResetError": 1}),
        _player(
            failovers=2,
            stalls=[0.9],
            state="failed",
            startup_s=None,
            failover_gaps=[0.2, 0.7],
            failover_stalls=[0.0, 0.65],
        ),
    ]
    series = [{"t": 0.0, "viewers": 3}, {"t": 10.0, "viewers": 3}]
    s = summarise(players, series, {"e/v360/1": 1, "e/v360/2": 1}, {})  # type: ignore[arg-type]
    assert s["started"] == 2 and s["failed"] == 1
    fo = s["failovers"]
    assert (fo["players"], fo["total"], fo["then_played"]) == (2, 3, 1)
    assert fo["gap_s"]["max"] == 0.7 and fo["stall_s"]["max"] == 0.65
    assert fo["stalls_longer_than_buffer"] == 1  # 0.65 s > the 0.6 s buffer
    assert s["stalls"]["longer_than_buffer"] == 1 and s["stalls"]["longest_s"] == 0.9
    assert s["origin_per_object"]["max"] == 1 and s["viewer_seconds"] == 30.0
    assert s["errors"] == {"ConnectionResetError": 1}


def test_startup_is_broken_down_by_cause_in_the_summary_and_the_report() -> None:
    parts = [
        {"press": 0.2, "mpd": 0.05, "init": 0.02, "first_segment": 0.23},
        {"press": 1.4, "mpd": 0.1, "init": 0.04, "first_segment": 0.26},
    ]
    players = [
        _player(startup_s=0.5, startup_parts=parts[0]),
        _player(startup_s=1.8, startup_parts=parts[1]),
        _player(startup_s=None, startup_parts={}, state="failed"),
    ]
    series = [{"t": 0.0, "viewers": 3, "target": 3, "playing": 2, "stalled": 0}]
    s = summarise(players, series, {}, {})  # type: ignore[arg-type]
    by_cause = s["startup_parts_s"]
    assert list(by_cause) == ["press", "mpd", "init", "first_segment"]
    assert by_cause["press"]["count"] == 2 and by_cause["press"]["max"] == 1.4
    assert by_cause["first_segment"]["p50"] == 0.23
    assert cdf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.5, 0.75, 1.0])
    results = {
        "scenario": "t", "duration_s": 1.0, "workers": 1, "players": players,
        "series": series, "summary": s,
        "metrics": {"origin_requests": [], "node_requests": {}},
    }  # fmt: skip
    figs = figures(results)
    assert "startup_cdf" in figs
    ax = figs["startup_cdf"].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "startup (total)", "press-play wait", "MPD (and clock sync)", "init segments",
        "first segment",
    ]  # fmt: skip
    assert "by cause (p50 / p99 s): press-play wait 0.2 / 1.4" in terminal_summary(results)


def test_rig_check_says_when_the_rig_itself_was_late() -> None:
    quiet = rig_check([0.2] * 990 + [30.0] * 10)
    assert quiet["trustworthy"] and quiet["late_share"] == 0.0
    assert "the figures are the system's" in rig_line(quiet)
    late = rig_check([0.2] * 970 + [RIG_LAG_WARN_MS + 50] * 30)  # 3 % of wakes: over p99
    assert not late["trustworthy"] and late["late_share"] == 0.03
    assert late["loop_lag_ms"]["max"] == RIG_LAG_WARN_MS + 50
    assert "the rig itself was late" in rig_line(late)
    assert rig_check([])["trustworthy"] and rig_line(None).endswith("not measured")


async def test_loop_lag_sees_a_blocked_loop() -> None:
    with LoopLag() as lag:
        await asyncio.sleep(0)  # the meter's first sleep starts
        time.sleep(0.15)  # the loop is blocked: the meter's wake-up is this late
        for _ in range(1000):  # a few loop iterations run its overdue wake-up
            if lag.samples:
                break
            await asyncio.sleep(0)
    assert lag.samples and lag.samples[0] >= 100


def test_percentiles_and_spread() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert math.isnan(percentile([], 0.5))
    assert spread([2.0], scale=1000)["p50"] == 2000


async def test_leaving_players_are_stopped_even_one_that_lost_its_cancellation() -> None:
    ended: list[str] = []

    async def player(name: str, swallow: int) -> None:
        try:
            while True:
                try:
                    await asyncio.Event().wait()  # plays until cancelled
                except asyncio.CancelledError:
                    if swallow:  # what wait_for does when its call completes meanwhile
                        swallow -= 1
                        continue
                    raise
        finally:
            ended.append(name)

    tasks = [asyncio.ensure_future(player("plain", 0)), asyncio.ensure_future(player("lost", 1))]
    await asyncio.sleep(0)  # (both start)
    await asyncio.wait_for(stop_all(tasks, recancel_s=0.01), 5.0)
    assert sorted(ended) == ["lost", "plain"] and all(t.cancelled() for t in tasks)


def test_worker_shares_add_up() -> None:
    for viewers in (0, 1, 7, 1000, 1001):
        parts = [share(viewers, w, 3) for w in range(3)]
        assert sum(parts) == viewers and max(parts) - min(parts) <= 1


def test_failed_viewers_come_back_in_their_own_time() -> None:
    assert arrivals(10, 5, 0) == 5
    assert arrivals(10, 5, 3) == 2  # three failed viewers will press play again themselves
    assert arrivals(10, 5, 8) == 0 and arrivals(4, 5, 0) == 0  # never negative


def test_stack_process_names() -> None:
    argv = livemesh_argv(["/venv/bin/python", "-m", "command.cli", "edge", "--name", "shield-1",
                          "--tier", "shield", "--port", "9"])  # fmt: skip
    assert argv is not None and names_of(argv) == {"edge", "shield-1", "shield"}
    assert names_of(["channel", "demo"]) == {"channel", "channel-demo"}
    assert names_of(["redis-server", "--port", "0"]) == {"redis"}
    assert livemesh_argv(["/usr/bin/python3", "other.py"]) is None


def test_gateway_refusals_add_up_by_kind() -> None:
    def body(message: str) -> dict[str, object]:
        return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message,
                          "requestId": "f00"}}  # fmt: skip

    shed = gateway_error(429, body("overloaded: concurrency limit 27 reached"))
    assert shed == "gateway 429: overloaded: concurrency limit N reached"
    assert gateway_error(429, body("overloaded: concurrency limit 31 reached")) == shed
    assert gateway_error(429, body("rate limit exceeded")) == "gateway 429: rate limit exceeded"
    assert gateway_error(502, "not json") == "gateway 502: not json"


def test_request_rates_are_averaged_over_a_segment() -> None:
    # a counter sampled each second that grows by 10 once every 2 s (one request burst a
    # segment): per-second differences would read 0, 10, 0, 10
    series = [[float(t), float(10 * (t // 2))] for t in range(8)]
    ts, per_s = rates(series, window_s=2.0)
    assert ts == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert per_s == [0.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert rates([[0.0, 5.0], [1.0, 0.0]]) == ([1.0], [0.0])  # a restarted node's counter


def test_progress_line() -> None:
    line = progress_line(15, 60, 300, 320, 290, 3, 12.4)
    assert line.startswith("[" + "#" * 8 + "." * 22 + "]  25%")
    assert "viewers 300/320" in line and "origin 12 req/s" in line
