"""LL-HLS from the LL-DASH chunks: the pure rendering and rules (live/hls.py), and the
origin's playlists, blocking reloads and byte-range parts over HTTP on a real Redis.

Playlists are read back with the ``m3u8`` parser, not with our own writer's ideas.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestServer

from kernel.channel_config import ChannelConfig
from kernel.epoch import Epoch, Position
from live.hls import (
    PART_HOLD_BACK_PARTS,
    PlaylistRequestError,
    ReloadQuery,
    RenditionView,
    advance_part_limit,
    hold_s,
    media_playlist,
    multivariant_playlist,
    parse_reload_query,
    reload_ready,
)
from tests.origin_helpers import (
    AUDIO,
    CHUNKS,
    CONFIG,
    VIDEO,
    Channel,
    chunk_bytes,
    gauge,
    until,
    url,
)

EPOCH = Epoch("e1", 1_700_000_000_000, (VIDEO, AUDIO))
PLAYLIST = "/live/demo/v1.m3u8"
HELD = "livemesh_origin_held_requests"


# -- the rules, without sockets -----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"_HLS_msn": "-1"},
        {"_HLS_msn": "1.5"},
        {"_HLS_msn": "x"},
        {"_HLS_msn": ""},
        {"_HLS_msn": "99999999999"},
        {"_HLS_msn": "٣"},  # a digit, but not an ASCII one
        {"_HLS_part": "1"},  # a part without its segment
        {"_HLS_msn": "1", "_HLS_part": "-2"},
        {"_HLS_skip": "NO"},
    ],
)
def test_malformed_directives_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(PlaylistRequestError):
        parse_reload_query(query)


def test_directives_parsed_and_telemetry_ignored() -> None:
    query = parse_reload_query({"_HLS_msn": "7", "_HLS_part": "2", "_HLS_skip": "YES", "CMCD": "x"})
    assert query == ReloadQuery(7, 2, True)
    assert query.blocking
    assert not parse_reload_query({"CMCD": "bl=300"}).blocking


def test_reload_readiness() -> None:
    at = Position(segment=5, chunk=2, complete=False)
    assert reload_ready(ReloadQuery(5, 2), at, CONFIG)
    assert reload_ready(ReloadQuery(3, 4), at, CONFIG)  # gone by: answered at once
    assert not reload_ready(ReloadQuery(5, 3), at, CONFIG)
    assert not reload_ready(ReloadQuery(5), at, CONFIG)  # the whole segment is awaited
    assert reload_ready(ReloadQuery(5), Position(5, CHUNKS - 1, True), CONFIG)
    # A part index past the segment's last part is the next segment's first part.
    assert not reload_ready(ReloadQuery(5, CHUNKS), Position(5, CHUNKS - 1, True), CONFIG)
    assert reload_ready(ReloadQuery(5, CHUNKS), Position(6, 0, False), CONFIG)
    assert not reload_ready(ReloadQuery(0, 0), None, CONFIG)


def test_too_far_ahead_is_refused_not_held() -> None:
    at = Position(segment=5, chunk=2, complete=False)
    assert not reload_ready(ReloadQuery(7), at, CONFIG)  # two ahead: held
    with pytest.raises(PlaylistRequestError):
        reload_ready(ReloadQuery(8), at, CONFIG)
    with pytest.raises(PlaylistRequestError):
        reload_ready(ReloadQuery(10**9, 0), None, CONFIG)
    limit = advance_part_limit(CONFIG)
    assert limit == 3000 // CONFIG.chunk_ms
    ahead = 2 + limit  # part index in segment 5 that is `limit` parts past chunk 2
    assert not reload_ready(ReloadQuery(5, ahead), at, CONFIG)
    with pytest.raises(PlaylistRequestError):
        reload_ready(ReloadQuery(5, ahead + 1), at, CONFIG)


def test_hold_is_a_held_segments_and_within_three_target_durations() -> None:
    assert hold_s(CONFIG) == 2 * CONFIG.segment_ms / 1000 == 1.0
    assert hold_s(ChannelConfig("x")) == 4.0 <= 3 * 2


def _sizes(segment: int, count: int) -> list[int]:
    return [100 * segment + k + 1 for k in range(count)]


def test_media_playlist_lists_chunks_as_byte_ranges_of_the_segment() -> None:
    position = Position(7, 2, False)
    view = RenditionView(VIDEO, position, {6: _sizes(6, CHUNKS), 7: _sizes(7, 3)})
    reports = {"v1": position, "a1": Position(7, 1, False)}
    text = media_playlist(CONFIG, EPOCH, view, reports)
    playlist = m3u8.loads(text)

    assert playlist.version == 9
    assert playlist.target_duration == 1
    control = playlist.server_control
    assert control.can_block_reload == "YES"
    assert control.part_hold_back >= round(3 * playlist.part_inf.part_target, 9)
    assert control.part_hold_back == PART_HOLD_BACK_PARTS * CONFIG.chunk_ms / 1000
    assert control.can_skip_until >= 6 * playlist.target_duration
    assert playlist.part_inf.part_target == CONFIG.chunk_ms / 1000

    window = CONFIG.window_s * 1000 // CONFIG.segment_ms
    assert playlist.media_sequence == 7 - window + 1
    whole = [s for s in playlist.segments if s.uri]
    assert [s.uri for s in whole] == [f"e1/v1/{n}.m4s" for n in range(4, 7)]
    assert all(s.duration == CONFIG.segment_ms / 1000 for s in whole)
    assert whole[0].program_date_time is not None
    assert whole[0].program_date_time.timestamp() * 1000 == EPOCH.start_ms + 4 * CONFIG.segment_ms
    assert "e1/v1/init.mp4" in text and whole[0].init_section.uri == "e1/v1/init.mp4"

    # Segment 6's parts tile its object exactly; the first alone starts a GOP.
    parts = playlist.segments[2].parts
    assert {p.uri for p in parts} == {"e1/v1/6.m4s"}
    offset = 0
    for k, part in enumerate(parts):
        length, start = map(int, part.byterange.strip('"').split("@"))
        assert (length, start) == (_sizes(6, CHUNKS)[k], offset)
        assert part.duration == CONFIG.chunk_ms / 1000
        assert (part.independent == "YES") == (k == 0)
        offset += length
    # Segment 7 is in progress: parts, no EXTINF, and the hint where its next part starts.
    live = playlist.segments[-1]
    assert live.uri is None and len(live.parts) == 3
    hint = playlist.preload_hint
    assert (hint.hint_type, hint.uri) == ("PART", "e1/v1/7.m4s")
    assert hint.byterange_start == sum(_sizes(7, 3)) and hint.byterange_length is None
    assert [(r.uri, r.last_msn, r.last_part) for r in playlist.rendition_reports] == [
        ("a1.m3u8", 7, 1)
    ]


def test_a_whole_last_segment_hints_the_next_ones_first_part() -> None:
    position = Position(3, CHUNKS - 1, True)
    view = RenditionView(AUDIO, position, {2: _sizes(2, CHUNKS), 3: _sizes(3, CHUNKS)})
    playlist = m3u8.loads(media_playlist(CONFIG, EPOCH, view, {}))
    assert playlist.segments[-1].uri == "e1/a1/3.m4s"
    assert all(p.independent == "YES" for p in playlist.segments[-1].parts)  # audio
    hint = playlist.preload_hint
    assert (hint.uri, hint.byterange_start) == ("e1/a1/4.m4s", 0)


def test_delta_update_skips_all_but_the_last_skip_until_seconds() -> None:
    config = ChannelConfig("demo", segment_ms=2000, chunk_ms=200, window_s=60)
    position = Position(40, 4, False)
    view = RenditionView(VIDEO, position, {39: _sizes(39, 10), 40: _sizes(40, 5)})
    full = m3u8.loads(media_playlist(config, EPOCH, view, {}))
    delta = m3u8.loads(media_playlist(config, EPOCH, view, {}, skip=True))
    assert full.media_sequence == delta.media_sequence == 11  # a 30-segment window
    skip_until = full.server_control.can_skip_until
    skipped = delta.skip.skipped_segments
    assert skipped > 0
    kept = [s for s in delta.segments if s.uri]
    assert [s.uri for s in kept] == [s.uri for s in full.segments if s.uri][skipped:]
    # What remains reaches back no further than CAN-SKIP-UNTIL from the playlist's end.
    end_s = 41 * 2
    assert kept[0].uri == f"e1/v1/{11 + skipped}.m4s"
    assert (11 + skipped) * 2 >= end_s - skip_until
    assert (11 + skipped - 1) * 2 < end_s - skip_until
    assert kept[0].program_date_time is not None


def test_multivariant_playlist() -> None:
    low = VIDEO.__class__("v0", "video", "avc1.64001e", 400_000, 15360, 320, 180, 30)
    epoch = Epoch("e1", EPOCH.start_ms, (low, VIDEO, AUDIO))
    playlist = m3u8.loads(multivariant_playlist(CONFIG, epoch))
    assert playlist.is_variant
    assert [p.uri for p in playlist.playlists] == ["v1.m3u8", "v0.m3u8"]
    top = playlist.playlists[0].stream_info
    assert top.bandwidth == VIDEO.bandwidth + AUDIO.bandwidth
    assert top.codecs == "avc1.64001f,mp4a.40.2"
    assert top.resolution == (640, 360)
    assert top.audio == "audio"
    (audio,) = playlist.media
    assert (audio.type, audio.uri, audio.default, audio.group_id) == (
        "AUDIO",
        "a1.m3u8",
        "YES",
        "audio",
    )


# -- the origin -----------------------------------------------------------------------------


async def fetch_playlist(
    http: aiohttp.ClientSession, server: TestServer, path: str = PLAYLIST, **query: str
) -> m3u8.M3U8:
    async with http.get(url(server, path), params=query) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        return m3u8.loads(await response.text())


async def test_origin_serves_the_playlists_beside_the_mpd(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    await channel.chunk(1, 0)
    await channel.chunk(1, 1)
    await channel.chunk(0, 0, rep="a1")
    variant = await fetch_playlist(http, server, "/live/demo/master.m3u8")
    assert [p.uri for p in variant.playlists] == ["v1.m3u8"]
    playlist = await fetch_playlist(http, server)
    assert [s.uri for s in playlist.segments] == ["e1/v1/0.m4s", None]
    assert [len(s.parts) for s in playlist.segments] == [CHUNKS, 2]
    assert [(r.uri, r.last_msn, r.last_part) for r in playlist.rendition_reports] == [
        ("a1.m3u8", 0, 0)
    ]


async def test_each_part_is_its_chunk_as_a_byte_range_of_the_segment(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    await channel.chunk(1, 0)
    await channel.chunk(1, 1)
    playlist = await fetch_playlist(http, server)
    for number, segment in enumerate(playlist.segments):
        for k, part in enumerate(segment.parts):
            length, start = map(int, part.byterange.strip('"').split("@"))
            last = start + length - 1
            headers = {"Range": f"bytes={start}-{last}"}
            async with http.get(url(server, f"/live/demo/{part.uri}"), headers=headers) as r:
                assert r.status == 206
                assert await r.read() == chunk_bytes("v1", number, k)
                total = "*" if segment.uri is None else str(CHUNKS * length)
                assert r.headers["Content-Range"] == f"bytes {start}-{last}/{total}"
                assert r.headers["Cache-Control"].endswith("immutable")


async def test_a_range_past_a_whole_segment_is_416(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    size = len(chunk_bytes("v1", 0, 0)) * CHUNKS
    headers = {"Range": f"bytes={size}-{size + 10}"}
    async with http.get(url(server, "/live/demo/e1/v1/0.m4s"), headers=headers) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{size}"


async def test_a_part_not_yet_produced_is_held_until_its_chunk(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    size = len(chunk_bytes("v1", 0, 1))
    headers = {"Range": f"bytes={size}-{2 * size - 1}"}  # chunk 1, not published yet
    request = asyncio.ensure_future(
        http.get(url(server, "/live/demo/e1/v1/0.m4s"), headers=headers)
    )
    await until(lambda: gauge(server, HELD) == 1)
    await channel.chunk(0, 1)
    async with await request as response:
        assert response.status == 206
        assert await response.read() == chunk_bytes("v1", 0, 1)


async def test_blocking_reload_is_held_until_the_part_exists(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    held = asyncio.ensure_future(fetch_playlist(http, server, _HLS_msn="0", _HLS_part="2"))
    await until(lambda: gauge(server, HELD) == 1)
    await channel.chunk(0, 1)  # wakes the hold, which finds part 2 still missing
    await channel.chunk(0, 2)
    playlist = await held
    assert len(playlist.segments[-1].parts) == 3
    # Asked for what exists: answered at once, whatever comes next.
    again = await fetch_playlist(http, server, _HLS_msn="0", _HLS_part="1")
    assert len(again.segments[-1].parts) == 3


async def test_blocking_reload_for_a_whole_segment_and_the_next_ones_first_part(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    for k in range(CHUNKS - 1):
        await channel.chunk(0, k)
    whole = asyncio.ensure_future(fetch_playlist(http, server, _HLS_msn="0"))
    past_last = asyncio.ensure_future(
        fetch_playlist(http, server, _HLS_msn="0", _HLS_part=str(CHUNKS))
    )
    await until(lambda: gauge(server, HELD) == 2)
    await channel.chunk(0, CHUNKS - 1)
    assert (await whole).segments[0].uri == "e1/v1/0.m4s"
    await until(lambda: gauge(server, HELD) == 1)
    assert not past_last.done()
    await channel.chunk(1, 0)
    playlist = await past_last
    assert len(playlist.segments[-1].parts) == 1 and playlist.segments[-1].uri is None


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (PLAYLIST + "?_HLS_msn=abc", 400),
        (PLAYLIST + "?_HLS_msn=-1", 400),
        (PLAYLIST + "?_HLS_part=1", 400),
        (PLAYLIST + "?_HLS_msn=3", 400),  # more than two segments ahead
        (PLAYLIST + "?_HLS_msn=0&_HLS_part=99", 400),  # past the advance part limit
        (PLAYLIST + "?_HLS_skip=v9", 400),
        ("/live/demo/V1.m3u8", 400),
        ("/live/demo/v9.m3u8", 404),
        ("/live/other/master.m3u8", 404),
        ("/live/demo/v1.m3u9", 404),
    ],
)
async def test_bad_playlist_requests_are_answered_at_once(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession, path: str, status: int
) -> None:
    await channel.chunk(0, 0)
    async with http.get(url(server, path)) as response:
        assert response.status == status
        assert response.headers["Cache-Control"].startswith("max-age=0")


async def test_a_held_reload_ends_with_503_when_the_encoder_stalls(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    started = time.monotonic()
    async with http.get(url(server, PLAYLIST + "?_HLS_msn=1")) as response:
        assert response.status == 503
    assert time.monotonic() - started >= hold_s(CONFIG) - 0.1


async def test_blocking_answers_may_be_cached_plain_ones_briefly(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    async with http.get(url(server, PLAYLIST)) as response:
        assert response.headers["Cache-Control"] == "public, max-age=1"
    async with http.get(url(server, PLAYLIST + "?_HLS_msn=0&_HLS_part=0")) as response:
        assert response.headers["Cache-Control"] == "public, max-age=6"


async def test_open_ended_ranges_get_the_whole_segment(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """An edge resuming a segment asks ``bytes=N-`` and skips N bytes of a whole answer
    itself (edge/upstream.py): that contract holds, complete segment or live."""
    await channel.segment(0)
    await channel.chunk(1, 0)
    await channel.chunk(1, 1)
    for number in (0, 1):
        path = f"/live/demo/e1/v1/{number}.m4s"
        async with http.get(url(server, path), headers={"Range": "bytes=100-"}) as response:
            assert response.status == 200
            assert "Content-Range" not in response.headers
            assert (await response.content.readexactly(200)) == chunk_bytes("v1", number, 0)[:200]
