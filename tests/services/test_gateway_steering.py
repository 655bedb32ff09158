"""The gateway's per-session MPD and DASH content steering manifest (pure parts)."""

from __future__ import annotations

from lxml import etree

from livemesh.playback.v1 import playback_pb2 as pb
from services.gateway.steering import (
    MPD_NS,
    session_urls,
    steered_mpd,
    steering_manifest,
)
from tests.test_mpd import dash_schema, mpd_tree  # noqa: F401  (dash_schema: a fixture)

NS = {"d": MPD_NS}
URLS = [
    pb.ManifestUrl(url="http://e2.test/t/TOKEN/live/demo/manifest.mpd", instance="instances/e2"),
    pb.ManifestUrl(url="http://e1.test/t/TOKEN/live/demo/manifest.mpd", instance="instances/e1"),
]
STEERING = "http://gw.test/v1/sessions/abc/steering"


def steered() -> etree._Element:
    return etree.fromstring(steered_mpd(etree.tostring(mpd_tree()), URLS, STEERING))


def test_the_session_mpd_names_every_edge_under_the_token_best_first() -> None:
    tree = steered()
    bases = tree.findall("d:BaseURL", NS)
    assert [(b.text, b.get("serviceLocation")) for b in bases] == [
        ("http://e2.test/t/TOKEN/live/demo/", "e2"),
        ("http://e1.test/t/TOKEN/live/demo/", "e1"),
    ]
    (steering,) = tree.findall("d:ContentSteering", NS)
    assert steering.text == STEERING
    assert steering.get("defaultServiceLocation") == "e2"
    assert steering.get("queryBeforeStart") == "false"
    # the channel's own MPD is kept: same periods, same template, same clocks
    original = mpd_tree()
    for path in ("d:Period", "d:UTCTiming"):
        assert [etree.tostring(e) for e in tree.findall(path, NS)] == [
            etree.tostring(e) for e in original.findall(path, NS)
        ]


def test_rewriting_a_session_mpd_again_replaces_rather_than_adds() -> None:
    again = etree.fromstring(steered_mpd(etree.tostring(steered()), URLS[1:], STEERING))
    assert [b.get("serviceLocation") for b in again.findall("d:BaseURL", NS)] == ["e1"]
    assert len(again.findall("d:ContentSteering", NS)) == 1


def test_the_session_mpd_is_schema_valid_but_for_content_steering(
    dash_schema: etree.XMLSchema,  # noqa: F811
) -> None:
    """The XSD at hand predates ContentSteering (MPEG-DASH 5th edition): the rest of the
    session's MPD, BaseURLs included, validates."""
    tree = steered()
    assert not dash_schema.validate(tree)  # (if this starts passing, the XSD learnt it)
    for element in tree.findall("d:ContentSteering", NS):
        tree.remove(element)
    assert dash_schema.validate(tree), dash_schema.error_log


def test_the_steering_manifest_orders_the_serving_edges() -> None:
    manifest, steering, playlist = session_urls("http://gw.test", "abc")
    assert manifest == "http://gw.test/v1/sessions/abc/manifest.mpd"
    assert playlist == "http://gw.test/v1/sessions/abc/master.m3u8"
    assert steering_manifest(URLS, steering) == {
        "VERSION": 1,
        "TTL": 5,
        "RELOAD-URI": steering,
        "PATHWAY-PRIORITY": ["e2", "e1"],
        "SERVICE-LOCATION-PRIORITY": ["e2", "e1"],
    }
