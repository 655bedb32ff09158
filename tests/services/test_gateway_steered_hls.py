"""The session's LL-HLS multivariant playlist with HLS content steering (pure), read back
with the ``m3u8`` parser."""

from __future__ import annotations

import m3u8
import pytest

from kernel.epoch import Epoch
from live.hls import multivariant_playlist
from services.gateway.steered_hls import BadPlaylist, steered_multivariant
from tests.origin_helpers import AUDIO, CONFIG, VIDEO

CHANNEL = multivariant_playlist(CONFIG, Epoch("e1", 1_700_000_000_000, (VIDEO, AUDIO)))
PATHWAYS = [
    ("edge-2", "http://127.0.0.2:8082/t/TOKEN/live/demo/"),
    ("edge-1", "http://127.0.0.1:8081/t/TOKEN/live/demo/"),
]
STEERING = "http://gw.test/v1/sessions/abc/steering"


def steered() -> m3u8.M3U8:
    return m3u8.loads(steered_multivariant(CHANNEL, PATHWAYS, STEERING))


def test_every_variant_is_repeated_per_pathway_under_its_edge_best_first() -> None:
    playlist = steered()
    assert playlist.is_variant
    variants = [(p.stream_info.pathway_id, p.uri) for p in playlist.playlists]
    assert variants == [
        ("edge-2", "http://127.0.0.2:8082/t/TOKEN/live/demo/v1.m3u8"),
        ("edge-1", "http://127.0.0.1:8081/t/TOKEN/live/demo/v1.m3u8"),
    ]
    channel = m3u8.loads(CHANNEL).playlists[0].stream_info
    for variant in playlist.playlists:  # the rendition itself is unchanged
        info = variant.stream_info
        assert (info.bandwidth, info.codecs, info.resolution) == (
            channel.bandwidth,
            channel.codecs,
            channel.resolution,
        )
        assert info.stable_variant_id == "v1.m3u8"  # one rendition whatever the Pathway


def test_each_pathway_has_its_own_audio_group_under_its_edge() -> None:
    playlist = steered()
    audio = [(m.group_id, m.uri, m.default) for m in playlist.media]
    assert audio == [
        ("audio.edge-2", "http://127.0.0.2:8082/t/TOKEN/live/demo/a1.m3u8", "YES"),
        ("audio.edge-1", "http://127.0.0.1:8081/t/TOKEN/live/demo/a1.m3u8", "YES"),
    ]
    assert [p.stream_info.audio for p in playlist.playlists] == ["audio.edge-2", "audio.edge-1"]


def test_content_steering_names_the_session_endpoint_and_the_best_edge() -> None:
    playlist = steered()
    assert playlist.content_steering.uri == STEERING
    assert playlist.content_steering.pathway_id == "edge-2"
    text = steered_multivariant(CHANNEL, PATHWAYS, STEERING)
    assert text.count("#EXT-X-CONTENT-STEERING:") == 1
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:9\n")


def test_rewriting_again_replaces_the_steering_tag() -> None:
    once = steered_multivariant(CHANNEL, PATHWAYS[1:], STEERING)
    twice = steered_multivariant(once, PATHWAYS[1:], "http://gw.test/other")
    assert twice.count("#EXT-X-CONTENT-STEERING:") == 1
    assert m3u8.loads(twice).content_steering.uri == "http://gw.test/other"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<MPD/>",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n",
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
    ],
)
def test_what_is_not_a_multivariant_playlist_is_refused(text: str) -> None:
    with pytest.raises(BadPlaylist):
        steered_multivariant(text, PATHWAYS, STEERING)


def test_a_session_without_edges_is_refused() -> None:
    with pytest.raises(BadPlaylist):
        steered_multivariant(CHANNEL, [], STEERING)
