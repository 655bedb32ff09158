"""LL-HLS through a cache node in front of the real origin (real Redis, loopback HTTP):
blocking reloads collapse per (playlist, msn, part) and are never answered for another;
parts are byte ranges of the one segment object, answered while it still fills."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import m3u8
import pytest

from edge import ranges
from edge.access import playlist_directives
from edge.node import EdgeNode
from kernel.tokens import TokenSigner, tokenized
from tests.origin_helpers import CHUNKS, Channel, CountingOrigin, chunk_bytes
from tests.test_edge_node import KEYS, start_node

PLAYLIST = "/live/demo/v1.m3u8"
SEGMENT = "/live/demo/e1/v1/{}.m4s"


@pytest.mark.parametrize(
    ("query", "key"),
    [
        (b"", ""),
        (b"CMCD=bl%3D300", ""),
        (b"_HLS_msn=7", "?_HLS_msn=7"),
        (b"_HLS_part=2&CMCD=sid%3Dx&_HLS_msn=7", "?_HLS_msn=7&_HLS_part=2"),
        (b"_HLS_skip=YES&_HLS_msn=7&_HLS_part=0", "?_HLS_msn=7&_HLS_part=0&_HLS_skip=YES"),
        (b"_HLS_msn=7&_HLS_msn=8", None),  # which one? refused, never guessed
        (b"_HLS_msn=7%00", None),
        (b"_HLS_msn=" + b"9" * 17, None),
        (b"_HLS_msn=", None),
    ],
)
def test_playlist_directives_make_the_key(query: bytes, key: str | None) -> None:
    assert playlist_directives(query) == key


def test_closed_ranges() -> None:
    assert ranges.closed(b"bytes=10-19") == (10, 19)
    for header in (b"bytes=10-", b"bytes=-5", b"bytes=9-3", b"items=1-2", b"bytes=1-2,4-5"):
        assert ranges.closed(header) is None


@pytest.fixture
async def edge(origin: CountingOrigin) -> AsyncIterator[tuple[EdgeNode, str]]:
    node, url = await start_node(parents=(origin.url,))
    yield node, url
    await node.close()


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_blocking_reloads_collapse_per_part_and_never_answer_another(
    channel: Channel,
    origin: CountingOrigin,
    edge: tuple[EdgeNode, str],
    http: aiohttp.ClientSession,
) -> None:
    node, url = edge
    await channel.chunk(0, 0)
    asked = "/live/demo/v1.m3u8?_HLS_msn=0&_HLS_part=2"

    async def reload(part: int, cmcd: str) -> m3u8.M3U8:
        query = f"?CMCD=sid%3D{cmcd}&_HLS_msn=0&_HLS_part={part}"
        async with http.get(url + PLAYLIST + query) as response:
            assert response.status == 200
            return m3u8.loads(await response.text())

    held = [asyncio.ensure_future(reload(2, f"viewer{n}")) for n in range(20)]
    await _until(lambda: node.counters.requests >= 20)
    await channel.chunk(0, 1)
    await channel.chunk(0, 2)
    answers = await asyncio.gather(*held)
    assert origin.targets[asked] == 1  # twenty viewers, one upstream request
    assert {len(a.segments[-1].parts) for a in answers} == {3}
    # The next part is another question: asked upstream, never answered from part 2's entry.
    nxt = asyncio.ensure_future(reload(3, "late"))
    await _until(lambda: origin.targets["/live/demo/v1.m3u8?_HLS_msn=0&_HLS_part=3"] == 1)
    assert not nxt.done()
    await channel.chunk(0, 3)
    assert len((await nxt).segments[-1].parts) == 4
    # Part 2 again: from the cache, still the answer to part 2.
    assert len((await reload(2, "again")).segments[-1].parts) == 3
    assert origin.targets[asked] == 1


async def test_a_part_is_answered_from_the_segment_while_it_fills(
    channel: Channel,
    origin: CountingOrigin,
    edge: tuple[EdgeNode, str],
    http: aiohttp.ClientSession,
) -> None:
    node, url = edge
    await channel.chunk(1, 0)
    size = len(chunk_bytes("v1", 1, 0))
    path = SEGMENT.format(1)
    for k in range(CHUNKS - 1):
        if k:
            await channel.chunk(1, k)
        first, last = k * size, (k + 1) * size - 1
        async with http.get(url + path, headers={"Range": f"bytes={first}-{last}"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/*"
            assert await r.read() == chunk_bytes("v1", 1, k)
    assert origin.targets[path] == 1  # one fetch of the whole segment serves every part
    # A part whose bytes have not arrived yet waits for them.
    first = (CHUNKS - 1) * size
    seen = node.counters.requests
    tail = asyncio.ensure_future(
        http.get(url + path, headers={"Range": f"bytes={first}-{first + size - 1}"})
    )
    await _until(lambda: node.counters.requests > seen)
    assert not tail.done()
    await channel.chunk(1, CHUNKS - 1)
    async with await tail as r:
        assert r.status == 206 and await r.read() == chunk_bytes("v1", 1, CHUNKS - 1)
    async with http.get(url + path) as whole:  # and DASH's whole segment: a hit
        assert whole.headers["X-Cache"] == "HIT"
        assert await whole.read() == b"".join(chunk_bytes("v1", 1, k) for k in range(CHUNKS))
    assert origin.targets[path] == 1


async def test_signed_playlists_share_one_entry_and_keep_their_directives(
    channel: Channel, origin: CountingOrigin, http: aiohttp.ClientSession
) -> None:
    node, url = await start_node(parents=(origin.url,), tokens_required=True)
    try:
        await channel.chunk(0, 0)
        signer = TokenSigner.from_spec(KEYS)
        query = "?_HLS_msn=0&_HLS_part=0"
        for viewer in ("a", "b"):
            token = signer.sign("/live/demo/", viewer, ttl_s=60)
            async with http.get(url + tokenized(token, PLAYLIST) + query) as response:
                assert response.status == 200
                playlist = m3u8.loads(await response.text())
                assert playlist.segments[-1].parts[0].uri == "e1/v1/0.m4s"  # relative
        assert origin.targets[PLAYLIST + query] == 1
        async with http.get(url + PLAYLIST + query) as response:
            assert response.status == 403
        bad = tokenized(signer.sign("/live/demo/", "c", ttl_s=60), PLAYLIST)
        async with http.get(url + bad + "?_HLS_msn=0&_HLS_msn=1") as response:
            assert response.status == 400
    finally:
        await node.close()
