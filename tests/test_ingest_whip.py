"""WHIP ingest: a real aiortc broadcaster publishes to the real endpoint, a real channel encodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as aioredis
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from live.ingest.server import IngestServer
from live.state import ChannelStore
from tests.ingest_helpers import (
    broadcaster_tracks,
    ingest_server,
    is_broadcast,
    is_slate,
    next_segment_centre,
    wait_threading_event,
)

KEY = "whip-secret-key"


async def make_offer(size: tuple[int, int] = (320, 180)) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in broadcaster_tracks(size):
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


@contextlib.asynccontextmanager
async def publishing(
    http: aiohttp.ClientSession, url: str, key: str = KEY, size: tuple[int, int] = (320, 180)
) -> AsyncIterator[tuple[RTCPeerConnection, str]]:
    """An aiortc broadcaster on air for the body; yields its connection and session URL."""
    pc = await make_offer(size)
    try:
        async with http.post(
            url,
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        ) as response:
            assert response.status == 201, await response.text()
            assert response.content_type == "application/sdp"
            assert response.headers["ETag"]
            location = response.headers["Location"]
            answer = await response.text()
        assert "a=candidate:" in answer  # complete: aiortc gathered before answering
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        yield pc, location
    finally:
        await pc.close()


def h264_high_only(offer: str) -> str:
    """The offer with its video cut down to H.264 High (which aiortc cannot take)."""
    h264 = {
        line.split()[0].split(":")[1]
        for line in offer.splitlines()
        if line.startswith("a=rtpmap:") and "H264/" in line
    }
    out, kind = [], ""
    for line in offer.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            if kind == "video":
                line = " ".join([*line.split()[:3], *sorted(h264)])
        elif (
            kind == "video"
            and line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))
            and line.split()[0].split(":")[1] not in h264
        ):
            continue
        out.append(line.replace("42e01f", "640028").replace("42001f", "640028"))
    return "\r\n".join(out) + "\r\n"


def endpoint(server: IngestServer, path: str = "/whip/whip") -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


async def test_broadcaster_replaces_the_slate_and_reconnects_into_the_same_epoch(
    redis: aioredis.Redis,
) -> None:
    store = ChannelStore(redis, "whip")
    async with ingest_server(redis, "whip", KEY) as server, aiohttp.ClientSession() as http:
        source = server.sources["whip"]
        epoch = await store.current_epoch()
        assert epoch is not None
        _, colour = await next_segment_centre(store)
        assert is_slate(colour), colour  # "starting soon" before anyone publishes

        async with publishing(http, endpoint(server)) as (_pc, location):
            assert await wait_threading_event(source.on_air, 10)
            first, colour = await next_segment_centre(store)
            assert is_broadcast(colour), colour

            # a second broadcaster for a live channel is refused
            second = await make_offer()
            async with http.post(
                endpoint(server),
                data=second.localDescription.sdp,
                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {KEY}"},
            ) as response:
                assert response.status == 409
                assert "already has a broadcaster" in await response.text()
            await second.close()

            # DELETE ends the session: the slate ("back soon") returns
            session_url = f"http://127.0.0.1:{server.http_port}{location}"
            async with http.delete(session_url, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 200
            assert not source.on_air.is_set() and not source.publishing
            _, colour = await next_segment_centre(store)
            assert is_slate(colour), colour
            async with http.delete(session_url, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 404

        async with publishing(http, endpoint(server, "/whip")):
            assert await wait_threading_event(source.on_air, 10)
            again, colour = await next_segment_centre(store)
            assert is_broadcast(colour), colour
        assert again > first
        assert (await store.current_epoch()) == epoch  # same epoch: no player reloads


async def test_the_endpoint_refuses_bad_keys_and_bad_offers(redis: aioredis.Redis) -> None:
    async with ingest_server(redis, "whip", KEY) as server, aiohttp.ClientSession() as http:
        pc = await make_offer()
        offer = pc.localDescription.sdp
        await pc.close()
        sdp = {"Content-Type": "application/sdp"}
        auth = {**sdp, "Authorization": f"Bearer {KEY}"}

        async def post(body: str, headers: dict[str, str]) -> tuple[int, str]:
            async with http.post(endpoint(server), data=body, headers=headers) as response:
                return response.status, await response.text()

        status, _ = await post(offer, sdp)
        assert status == 401
        status, _ = await post(offer, {**sdp, "Authorization": "Bearer not-the-key"})
        assert status == 401
        status, reason = await post("hello", auth)
        assert status == 400 and "malformed SDP" in reason
        status, reason = await post(h264_high_only(offer), auth)
        assert status in (400, 406) and "H.264 constrained baseline" in reason, reason
        status, _ = await post(
            offer, {"Content-Type": "text/plain", "Authorization": f"Bearer {KEY}"}
        )
        assert status == 415
        async with http.options(endpoint(server)) as response:
            assert response.status == 204
            assert response.headers["Accept-Post"] == "application/sdp"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert not server.sources["whip"].publishing


async def test_a_backup_session_whose_picture_disagrees_is_closed_with_the_reason_kept(
    redis: aioredis.Redis,
) -> None:
    async with ingest_server(redis, "whip", KEY) as server, aiohttp.ClientSession() as http:
        source = server.sources["whip"]
        async with publishing(http, endpoint(server)):
            assert await wait_threading_event(source.on_air, 10)
            backup_url = endpoint(server, "/whip/whip?backup=1")
            async with publishing(http, backup_url, size=(640, 360)) as (backup, _):
                closed = asyncio.Event()

                @backup.on("connectionstatechange")
                def on_state() -> None:
                    if backup.connectionState in ("closed", "failed"):
                        closed.set()

                # the size is known only once media flows, after the 201: the session
                # is closed then (the client sees its peer connection end), told no more
                await asyncio.wait_for(closed.wait(), 10)
                assert backup.connectionState == "closed"
            assert source.refused == "the backup feed is 640x360, the primary 320x180"
            assert source.on_air.is_set() and len(server.whip.sessions) == 1
            _, colour = await next_segment_centre(ChannelStore(redis, "whip"))
            assert is_broadcast(colour), colour  # the primary carried on
