"""The LL-DASH MPD: schema-valid, every element of DESIGN.md §3, pure in its inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree

from kernel.channel_config import ChannelConfig
from kernel.epoch import Epoch, Representation
from live.mpd import duration, iso_utc, live_mpd, render_mpd, seconds

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(__file__).parent / "testdata"
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
START_MS = 1_700_000_000_000
NOW_MS = START_MS + 12_345
TIME_URLS = ["http://edge-1.test/time", "http://edge-2.test/time"]  # tried in this order

REPS = (
    Representation("v720", "video", "avc1.64001f", 2_500_000, 15360, 1280, 720, 30),
    Representation("v360", "video", "avc1.64001e", 600_000, 15360, 640, 360, 30),
    Representation("a128", "audio", "mp4a.40.2", 128_000, 48000, sample_rate=48000, channels=2),
)
EPOCH = Epoch(str(START_MS), START_MS, REPS)
CONFIG = ChannelConfig("demo")


def schema_path() -> Path | None:
    """The MPEG-DASH XSD: ``LIVEMESH_MPD_XSD``, else ``../shared/schemas`` beside the repo."""
    given = os.environ.get("LIVEMESH_MPD_XSD")
    candidates = [Path(given)] if given else []
    candidates.append(REPO.parent / "shared" / "schemas" / "DASH-MPD.xsd")
    return next((p for p in candidates if p.is_file()), None)


def mpd_tree(config: ChannelConfig = CONFIG, epoch: Epoch = EPOCH) -> etree._Element:
    return etree.fromstring(render_mpd(config, epoch, NOW_MS, TIME_URLS).encode())


def one(tree: etree._Element, path: str) -> etree._Element:
    found = tree.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    element: etree._Element = found[0]
    return element


@pytest.fixture(scope="module")
def dash_schema() -> etree.XMLSchema:
    path = schema_path()
    if path is None:
        pytest.skip("no MPEG-DASH XSD: set LIVEMESH_MPD_XSD or provide ../shared/schemas/")
    return etree.XMLSchema(etree.parse(str(path)))


def test_validates_against_the_dash_schema(dash_schema: etree.XMLSchema) -> None:
    for config in (CONFIG, ChannelConfig("fast", segment_ms=1000, chunk_ms=100, window_s=10)):
        tree = mpd_tree(config)
        assert dash_schema.validate(tree), dash_schema.error_log


def test_schema_check_catches_a_misplaced_element(dash_schema: etree.XMLSchema) -> None:
    """The validation above can fail: an element out of sequence order is rejected."""
    tree = mpd_tree()
    timing = tree.xpath("/d:MPD/d:UTCTiming", namespaces=NS)[0]
    tree.insert(0, timing)  # UTCTiming must follow Period
    assert not dash_schema.validate(tree)


def test_mpd_attributes() -> None:
    mpd = mpd_tree()
    assert mpd.get("type") == "dynamic"
    profiles = mpd.get("profiles", "").split(",")
    assert "urn:mpeg:dash:profile:isoff-live:2011" in profiles
    assert "urn:mpeg:dash:profile:cmaf:2019" in profiles
    assert mpd.get("availabilityStartTime") == "2023-11-14T22:13:20.000Z"
    assert mpd.get("publishTime") == "2023-11-14T22:13:32.345Z"
    assert mpd.get("minimumUpdatePeriod") == "PT2S"
    assert mpd.get("timeShiftBufferDepth") == "PT60S"
    assert mpd.get("maxSegmentDuration") == "PT2S"
    assert mpd.get("minBufferTime") == "PT2S"


def test_one_period_per_epoch_starting_at_zero() -> None:
    period = one(mpd_tree(), "/d:MPD/d:Period")
    assert period.get("id") == EPOCH.id
    assert period.get("start") == "PT0S"


def test_adaptation_sets_and_representations() -> None:
    tree = mpd_tree()
    video = one(tree, "//d:AdaptationSet[@contentType='video']")
    assert video.get("mimeType") == "video/mp4"
    assert video.get("segmentAlignment") == "true"
    assert video.get("startWithSAP") == "1"
    reps = video.xpath("d:Representation", namespaces=NS)
    assert [(r.get("id"), r.get("width"), r.get("height")) for r in reps] == [
        ("v720", "1280", "720"),
        ("v360", "640", "360"),
    ]
    assert reps[0].get("codecs") == "avc1.64001f"
    assert reps[0].get("bandwidth") == "2500000"
    assert reps[0].get("frameRate") == "30"

    audio = one(tree, "//d:AdaptationSet[@contentType='audio']")
    assert audio.get("mimeType") == "audio/mp4"
    assert audio.get("lang")
    rep = one(audio, "d:Representation")
    assert (rep.get("id"), rep.get("audioSamplingRate")) == ("a128", "48000")
    assert one(rep, "d:AudioChannelConfiguration").get("value") == "2"


def test_segment_template_addresses_segments_by_number_from_epoch_start() -> None:
    tree = mpd_tree()
    for adaptation, timescale in (("video", 15360), ("audio", 48000)):
        template = one(tree, f"//d:AdaptationSet[@contentType='{adaptation}']/d:SegmentTemplate")
        assert template.get("timescale") == str(timescale)
        assert template.get("duration") == str(2 * timescale)
        assert template.get("startNumber") == "0"
        assert template.get("media") == f"{EPOCH.id}/$RepresentationID$/$Number$.m4s"
        assert template.get("initialization") == f"{EPOCH.id}/$RepresentationID$/init.mp4"
        assert template.get("availabilityTimeOffset") == "1.8"
        assert template.get("availabilityTimeComplete") == "false"


def test_low_latency_signalling() -> None:
    tree = mpd_tree()
    latency = one(tree, "/d:MPD/d:ServiceDescription/d:Latency")
    assert (latency.get("min"), latency.get("target"), latency.get("max")) == ("400", "600", "2600")
    rate = one(tree, "/d:MPD/d:ServiceDescription/d:PlaybackRate")
    assert float(rate.get("min", "1")) < 1 < float(rate.get("max", "1"))
    for adaptation in tree.xpath("//d:AdaptationSet", namespaces=NS):
        prt = one(adaptation, "d:ProducerReferenceTime")
        assert prt.get("id") == latency.get("referenceId")
        assert prt.get("type") == "encoder"
        assert prt.get("wallClockTime") == "2023-11-14T22:13:20.000Z"
        assert prt.get("presentationTime") == "0"
        assert one(prt, "d:UTCTiming").get("value") == TIME_URLS[0]
        resync = one(adaptation, "d:Resync")
        template = one(adaptation, "d:SegmentTemplate")
        chunk_units = int(template.get("timescale", "0")) * CONFIG.chunk_ms // 1000
        assert (resync.get("type"), resync.get("dT")) == ("0", str(chunk_units))
    timings = tree.xpath("/d:MPD/d:UTCTiming", namespaces=NS)
    assert [t.get("schemeIdUri") for t in timings] == ["urn:mpeg:dash:utc:http-iso:2014"] * 2
    assert [t.get("value") for t in timings] == TIME_URLS  # every source, in the given order


def test_other_durations_follow_the_config() -> None:
    config = ChannelConfig("fast", segment_ms=1000, chunk_ms=100, window_s=10)
    tree = mpd_tree(config)
    template = one(tree, "//d:AdaptationSet[@contentType='video']/d:SegmentTemplate")
    assert template.get("availabilityTimeOffset") == "0.9"
    assert template.get("duration") == "15360"
    assert tree.get("timeShiftBufferDepth") == "PT10S"


def test_mixed_timescales_fall_back_to_milliseconds() -> None:
    reps = (REPS[0], Representation("v360", "video", "avc1.64001e", 600_000, 90000, 640, 360, 30))
    tree = mpd_tree(epoch=Epoch(EPOCH.id, START_MS, reps))
    template = one(tree, "//d:SegmentTemplate")
    assert (template.get("timescale"), template.get("duration")) == ("1000", "2000")
    assert tree.xpath("//d:AdaptationSet[@contentType='audio']", namespaces=NS) == []


def test_rendering_is_pure_and_matches_the_reference_file() -> None:
    text = render_mpd(CONFIG, EPOCH, NOW_MS, TIME_URLS)
    assert text == render_mpd(CONFIG, EPOCH, NOW_MS, TIME_URLS)
    assert text == (TESTDATA / "demo.mpd").read_text()
    assert live_mpd(CONFIG, EPOCH, NOW_MS, TIME_URLS).get("publishTime") == iso_utc(NOW_MS)


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0"), (200, "0.2"), (1800, "1.8"), (2000, "2"), (60000, "60")]
)
def test_seconds_and_durations(ms: int, text: str) -> None:
    assert seconds(ms) == text
    assert duration(ms) == f"PT{text}S"


def test_iso_utc_keeps_milliseconds() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(START_MS + 7) == "2023-11-14T22:13:20.007Z"
