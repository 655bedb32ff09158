"""The origin over real HTTP on loopback, fed through a real Redis (DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from datetime import datetime

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from lxml import etree
from yarl import URL

from kernel import clock
from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import put_channel_config
from kernel.epoch import Epoch, Position, Representation
from kernel.ports import free_port
from kernel.redis_server import SHARED_POOL_CONNECTIONS, shared_client
from live.http_errors import Gone, TooEarly
from live.origin import SegmentState, build_app, segment_state
from live.origin import main as origin_main
from live.state import ChannelStore
from tests.origin_helpers import (
    CHUNKS,
    CONFIG,
    IMMUTABLE,
    STALL_S,
    Channel,
    chunk_bytes,
    gauge,
    origin_of,
    until,
    url,
    whole,
)

SEG = "/live/demo/e1/v1/{}.m4s"


# -- whole objects ---------------------------------------------------------------------


async def test_complete_segment_is_served_whole(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    await channel.segment(0, rep="a1")
    async with http.get(url(server, SEG.format(0))) as response:
        assert response.status == 200
        assert await response.read() == whole("v1", 0)
        assert response.headers["Content-Length"] == str(len(whole("v1", 0)))
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert response.headers["Content-Type"] == "video/mp4"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(url(server, "/live/demo/e1/a1/0.m4s")) as response:
        assert response.headers["Content-Type"] == "audio/mp4"
        assert await response.read() == whole("a1", 0)
    async with http.head(url(server, SEG.format(0))) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(whole("v1", 0)))
        assert await response.read() == b""


async def test_init_segment(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(url(server, "/live/demo/e1/a1/init.mp4")) as response:
        assert response.status == 200
        assert await response.read() == b"init-a1"
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert response.headers["Content-Type"] == "audio/mp4"


async def test_manifest(channel: Channel, server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(server, "/live/demo/manifest.mpd")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/dash+xml")
        assert response.headers["Cache-Control"] == "public, max-age=1"
        mpd = etree.fromstring(await response.read())
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    assert mpd.xpath("d:Period/@id", namespaces=ns) == ["e1"]
    timing = mpd.xpath("d:UTCTiming/@value", namespaces=ns)
    assert timing == [f"http://127.0.0.1:{server.port}/time"]


async def test_manifest_names_the_configured_time_sources_in_order(
    redis: aioredis.Redis, channel: Channel, http: aiohttp.ClientSession
) -> None:
    sources = ["https://clock-1.example/time", "https://clock-2.example/time"]
    server = TestServer(build_app(redis, time_urls=sources), host="127.0.0.1")
    await server.start_server()
    try:
        async with http.get(url(server, "/live/demo/manifest.mpd")) as response:
            mpd = etree.fromstring(await response.read())
    finally:
        await server.close()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    assert mpd.xpath("d:UTCTiming/@value", namespaces=ns) == sources


async def test_time(server: TestServer, http: aiohttp.ClientSession) -> None:
    before = clock.now_ms()
    async with http.get(url(server, "/time")) as response:
        text = await response.text()
        assert response.headers["Cache-Control"] == "no-store"
    after = clock.now_ms()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    stamp = int(datetime.fromisoformat(text).timestamp() * 1000)
    assert before <= stamp <= after


# -- the live edge ---------------------------------------------------------------------


async def test_in_progress_segment_streams_each_chunk_as_published(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    loop = asyncio.get_running_loop()
    async with http.get(url(server, SEG.format(0))) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in response.headers
        first = await response.content.readexactly(len(chunk_bytes("v1", 0, 0)))
        first_at = loop.time()
        # Only now is the rest of the segment produced: the first chunk came before it.
        assert await channel.store.position("e1", "v1") == Position(0, 0, False)
        for k in range(1, CHUNKS):
            await channel.chunk(0, k)
            expect = chunk_bytes("v1", 0, k)
            assert await response.content.readexactly(len(expect)) == expect
        completed_at = loop.time()
        assert await response.content.read() == b""
    assert first == chunk_bytes("v1", 0, 0)
    assert first_at < completed_at
    async with http.get(url(server, SEG.format(0))) as again:
        assert again.headers["Content-Length"] == str(len(whole("v1", 0)))
        assert await again.read() == whole("v1", 0)


async def test_next_segment_is_held_until_its_first_chunk(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)

    async def fetch() -> aiohttp.ClientResponse:
        return await http.get(url(server, SEG.format(1)))

    request = asyncio.create_task(fetch())
    await until(lambda: gauge(server, "livemesh_origin_held_requests") == 1)
    assert not request.done()  # held: no answer while segment 1 has no chunk
    await channel.chunk(1, 0)
    async with await request as response:
        assert response.status == 200
        for k in range(CHUNKS):
            if k:
                await channel.chunk(1, k)
            expect = chunk_bytes("v1", 1, k)
            assert await response.content.readexactly(len(expect)) == expect
        assert await response.content.read() == b""
    assert gauge(server, "livemesh_origin_held_requests") == 0


async def test_next_segment_request_gives_up_when_the_encoder_stalls(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.get(url(server, SEG.format(1))) as response:
        assert response.status == 503
        assert response.headers["Cache-Control"].startswith("max-age=0")
        assert response.headers["Livemesh-Hold"] == "expired"  # caches pass it on as is
        assert (await response.text()).strip()
    assert STALL_S * 0.9 <= loop.time() - started < STALL_S + 3


async def test_stalled_stream_is_cut_not_passed_off_as_complete(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    async with http.get(url(server, SEG.format(0))) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_far_ahead_is_404_with_a_short_max_age(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    for number in (2, 5, 1000):
        async with http.get(url(server, SEG.format(number))) as response:
            assert response.status == 404
            max_age = re.search(r"max-age=(\d+)", response.headers["Cache-Control"])
            assert max_age is not None and int(max_age.group(1)) * 1000 <= CONFIG.chunk_ms
            assert "not produced yet" in await response.text()


async def test_expired_and_unknown_objects(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    await channel.chunk(10, 0)  # the live edge moves on; the window holds 4 segments
    cases = {
        SEG.format(0): 410,  # behind the window
        SEG.format(7): 410,  # inside it, but its bytes are gone
        "/live/demo/old/v1/0.m4s": 404,  # unknown epoch
        "/live/demo/e1/v9/0.m4s": 404,  # unknown rendition
        "/live/demo/e1/v9/init.mp4": 404,
        "/live/other/manifest.mpd": 404,  # unknown channel
        "/live/other/e1/v1/0.m4s": 404,
    }
    for path, status in cases.items():
        async with http.get(url(server, path)) as response:
            assert (path, response.status) == (path, status)
            assert response.headers["Cache-Control"].startswith("max-age=0")
            assert (await response.text()).strip()


async def test_next_segment_of_an_ended_epoch_is_not_held(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    await channel.store.end_epoch(channel.epoch)
    async with http.get(url(server, SEG.format(1))) as response:
        assert response.status == 404
        assert "ended" in await response.text()
    async with http.get(url(server, "/live/demo/manifest.mpd")) as response:
        assert response.status == 404
        assert "off air" in await response.text()


@pytest.mark.parametrize(
    ("number", "position", "expected"),
    [
        (0, None, SegmentState.NEXT),
        (3, Position(3, 2, False), SegmentState.LIVE),
        (3, Position(3, 4, True), SegmentState.COMPLETE),
        (2, Position(3, 0, False), SegmentState.COMPLETE),
        (4, Position(3, 2, False), SegmentState.NEXT),
        (4, Position(3, 4, True), SegmentState.NEXT),
        (6, Position(10, 0, False), SegmentState.COMPLETE),  # oldest in the window
    ],
)
def test_segment_state(number: int, position: Position | None, expected: SegmentState) -> None:
    assert segment_state(number, position, CONFIG) is expected


@pytest.mark.parametrize(
    ("number", "position", "due"),
    [
        (6, Position(3, 2, False), 5),  # the encoder is late: the MPD's next segment is held
        (5, Position(3, 2, False), 5),
        (2, None, 1),  # nothing published yet, but the clock says segment 1 has begun
    ],
)
def test_a_late_encoder_does_not_turn_due_segments_into_404(
    number: int, position: Position | None, due: int
) -> None:
    assert segment_state(number, position, CONFIG, due) is SegmentState.NEXT


@pytest.mark.parametrize(
    ("number", "position", "due", "error"),
    [
        (1, None, -1, TooEarly),
        (5, Position(3, 2, False), 3, TooEarly),
        (5, Position(3, 4, True), 3, TooEarly),
        (5, Position(10, 0, False), 10, Gone),  # one behind the window
        (7, Position(3, 2, False), 5, TooEarly),  # beyond the clock's next segment too
    ],
)
def test_segment_state_out_of_reach(
    number: int, position: Position | None, due: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        segment_state(number, position, CONFIG, due)


# -- live-edge HEAD --------------------------------------------------------------------


async def test_head_of_live_edge_segments_never_waits(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.chunk(0, 0)
    async with http.head(url(server, SEG.format(0))) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "video/mp4"
    async with http.head(url(server, SEG.format(1))) as response:
        assert response.status == 404
    assert origin_of(server).fanout.waiting == 0


# -- bad input -------------------------------------------------------------------------

BAD_PATHS = {
    "/live/demo/e1/v1/abc.m4s": 400,
    "/live/demo/e1/v1/-1.m4s": 400,
    "/live/demo/e1/v1/1.5.m4s": 400,
    "/live/demo/e1/v1/+1.m4s": 400,
    "/live/demo/e1/v1/12345678901.m4s": 400,
    "/live/demo/e1/v1/0.mp4": 404,
    "/live/Demo!/manifest.mpd": 400,
    "/live/demo/e1/v1:x/0.m4s": 400,
    "/live/demo/e.1/v1/0.m4s": 400,
    "/live/demo/%2e%2e/v1/0.m4s": 400,
    "/live/demo/e1/%2e%2e/0.m4s": 400,
    "/live/demo/e1/v1/%2e%2e%2f%2e%2e%2fconfig": 404,
    "/live/demo/e1/v1/..%2f..%2f0.m4s": 400,
    "/live/demo/../../../etc/passwd": 404,
    "/live/demo/e1/v1/0.m4s/extra": 404,
    "/nothing": 404,
}


async def test_bad_paths_get_a_short_4xx_reason(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    for path, status in BAD_PATHS.items():
        as_written = URL(url(server, "/") + path.lstrip("/"), encoded=True)
        async with http.get(as_written) as response:
            body = await response.text()
            assert (path, response.status) == (path, status)
            assert 0 < len(body.strip()) < 100
            assert response.headers["Cache-Control"].startswith("max-age=0")
    async with http.post(url(server, "/live/demo/manifest.mpd")) as response:
        assert response.status == 405
    async with http.get(url(server, SEG.format(0))) as response:
        assert await response.read() == whole("v1", 0)


async def raw_exchange(server: TestServer, request: bytes) -> bytes:
    """Send bytes as they are and read until the server closes (bounded: never a hung socket)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /live/demo/" + b"a" * 10_000 + b"/manifest.mpd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /time HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n",
        b"GET /time HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /time HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /time HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /time HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["long-url", "big-header", "many-headers", "garbage", "version", "length", "header"],
)
async def test_malformed_requests_get_400_and_a_closed_socket(
    server: TestServer, http: aiohttp.ClientSession, request_bytes: bytes
) -> None:
    answer = await raw_exchange(server, request_bytes)
    status_line = answer.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), status_line
    async with http.get(url(server, "/time")) as response:
        assert response.status == 200


# -- CORS ------------------------------------------------------------------------------


async def test_cors_preflight_and_headers(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": "https://player.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range",
    }
    async with http.options(url(server, SEG.format(0)), headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in response.headers["Access-Control-Allow-Methods"]
        assert response.headers["Access-Control-Allow-Headers"]
    for path in ("/live/demo/manifest.mpd", "/time", SEG.format(99)):
        async with http.get(url(server, path), headers={"Origin": "https://p.example"}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            exposed = resp.headers["Access-Control-Expose-Headers"]
            assert "Date" in exposed and "Content-Length" in exposed


# -- resources -------------------------------------------------------------------------


async def test_disconnecting_clients_leave_no_stuck_waiters(
    channel: Channel, server: TestServer
) -> None:
    origin = origin_of(server)
    await channel.segment(0)
    await channel.chunk(1, 0)
    held_session = aiohttp.ClientSession()
    streaming_session = aiohttp.ClientSession()
    try:
        streaming = await streaming_session.get(url(server, SEG.format(1)))
        await streaming.content.readexactly(len(chunk_bytes("v1", 1, 0)))
        held = asyncio.create_task(held_session.get(url(server, SEG.format(2))))
        await until(lambda: gauge(server, "livemesh_origin_held_requests") == 1)
        assert gauge(server, "livemesh_origin_streaming_responses") == 1
        assert origin.fanout.waiting == 2
    finally:
        await held_session.close()  # both viewers leave mid-wait
        await streaming_session.close()
    # Sooner than any stall timeout could end them: their handlers were cancelled.
    await until(lambda: origin.fanout.waiting == 0, timeout_s=STALL_S / 2)
    await until(lambda: gauge(server, "livemesh_origin_streaming_responses") == 0)
    assert gauge(server, "livemesh_origin_held_requests") == 0
    with pytest.raises(aiohttp.ClientError):
        await held
    # and the origin goes on serving the segments they left
    async with aiohttp.ClientSession() as http:
        for k in range(1, CHUNKS):
            await channel.chunk(1, k)
        async with http.get(url(server, SEG.format(1))) as response:
            assert await response.read() == whole("v1", 1)


async def test_one_event_reader_per_channel_however_many_viewers(
    channel: Channel, server: TestServer, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    viewers = [asyncio.create_task(http.get(url(server, SEG.format(1)))) for _ in range(20)]
    await until(lambda: gauge(server, "livemesh_origin_held_requests") == 20)
    readers = [t for t in asyncio.all_tasks() if t.get_name() == "fanout:demo" and not t.done()]
    assert len(readers) == 1
    await channel.segment(1)
    for viewer in viewers:
        async with await viewer as response:
            assert await response.read() == whole("v1", 1)


async def test_app_cleanup_stops_the_event_readers(
    redis: aioredis.Redis, channel: Channel, http: aiohttp.ClientSession
) -> None:
    await channel.segment(0)
    server = TestServer(build_app(redis), host="127.0.0.1")
    await server.start_server()
    try:
        await channel.chunk(1, 0)
        async with http.get(url(server, SEG.format(1))) as response:
            assert response.status == 200  # streaming: the reader was started
            await response.content.readexactly(len(chunk_bytes("v1", 1, 0)))
            readers = [t for t in asyncio.all_tasks() if t.get_name() == "fanout:demo"]
            assert len(readers) == 1 and not readers[0].done()
    finally:
        await server.close()
    assert readers[0].done()


async def test_metrics(channel: Channel, server: TestServer, http: aiohttp.ClientSession) -> None:
    await channel.segment(0)
    async with http.get(url(server, SEG.format(0))) as response:
        await response.read()
    async with http.get(url(server, SEG.format(9))) as response:
        await response.read()
    async with http.get(url(server, "/metrics")) as response:
        text = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
    assert 'livemesh_origin_responses_total{status="200"} 1.0' in text
    assert 'livemesh_origin_responses_total{status="404"} 1.0' in text
    sent = re.search(r"^livemesh_origin_media_bytes_total (\S+)$", text, re.M)
    assert sent is not None and float(sent.group(1)) >= len(whole("v1", 0))
    assert "livemesh_origin_held_requests 0.0" in text


# -- the process -----------------------------------------------------------------------


async def test_origin_command_serves_until_sigterm(redis_url: str) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "command.cli",
        "origin",
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=10)
        assert f"listening on http://127.0.0.1:{port}" in line.decode()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/time") as response,
        ):
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_origin_command_needs_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        origin_main([])
    assert exited.value.code == 2


async def test_a_crowd_larger_than_the_redis_pool_is_served_not_refused(redis_url: str) -> None:
    """More concurrent viewers than Redis connections: they queue for one, none gets 503."""
    redis = shared_client(redis_url)
    await redis.flushdb()
    store = ChannelStore(redis, "crowd")
    config = ChannelConfig("crowd")
    epoch = Epoch("1000", clock.now_ms(), (Representation("v", "video", "avc1.64001f", 1, 15360),))
    await put_channel_config(redis, config)
    await store.start_epoch(epoch, {"v": b"init"}, window_s=60)
    await store.publish_chunk(epoch, "v", 0, 0, b"only-chunk", True, 60)
    app = build_app(redis)
    connector = aiohttp.TCPConnector(limit=0)  # the client must not cap the crowd itself
    async with TestServer(app) as server, aiohttp.ClientSession(connector=connector) as http:
        crowd = SHARED_POOL_CONNECTIONS * 3
        answers = await asyncio.gather(
            *(http.get(server.make_url("/live/crowd/1000/v/0.m4s")) for _ in range(crowd))
        )
        statuses = [a.status for a in answers]
        bodies = {await a.read() for a in answers}
        for answer in answers:
            answer.release()
    await redis.aclose()
    assert statuses == [200] * crowd
    assert bodies == {b"only-chunk"}
