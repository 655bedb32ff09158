"""The LL-DASH manifest of a live channel: a pure function of state, config and time.

:func:`live_mpd` builds the MPD element tree and :func:`write_mpd` serialises it
(livesim2 keeps ``LiveMPD`` and ``writeLiveMPD`` apart the same way), so tests can
inspect the tree and the origin only ever sends text.

The timing follows DESIGN.md §3: media time 0 is the epoch's start (the MPD's
``availabilityStartTime``), segment ``n`` covers ``[n·D, (n+1)·D)`` and is addressed
by ``$Number$`` from 0, and a segment may be requested ``D - C`` before it is
complete (``availabilityTimeOffset``), because the origin streams it chunk by chunk.
Child elements are appended in the order the MPEG-DASH schema's sequences demand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from lxml import etree

from kernel.channel_config import ChannelConfig
from kernel.epoch import Epoch, Representation

MPD_NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
PROFILES = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
UTC_TIMING_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
AUDIO_CHANNELS_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
# The ladder carries no language; "und" is ISO 639-2 for "undetermined".
AUDIO_LANGUAGE = "und"
# One producer clock (the encoder's) for every AdaptationSet, so one id serves all
# and ServiceDescription's Latency@referenceId names it.
PRODUCER_REFERENCE_ID = 0
# Catch-up speeds a player may use to hold the target latency (DVB-DASH's usual ±4 %).
PLAYBACK_RATE_MIN = 0.96
PLAYBACK_RATE_MAX = 1.04
# Timescale of an AdaptationSet whose Representations disagree on theirs: milliseconds,
# the unit of the timing model, in which every D and C is whole.
FALLBACK_TIMESCALE = 1000
_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


def iso_utc(ms: int) -> str:
    """UTC wall-clock ``ms`` as ISO 8601 with milliseconds and ``Z`` (xs:dateTime, http-iso)."""
    stamp = _EPOCH_ZERO + timedelta(milliseconds=ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds(ms: int) -> str:
    """``ms`` as a decimal number of seconds with no trailing zeros (``1800`` -> ``"1.8"``)."""
    return format(Decimal(ms).scaleb(-3).normalize(), "f")


def duration(ms: int) -> str:
    """``ms`` as an xs:duration (``200`` -> ``"PT0.2S"``)."""
    return f"PT{seconds(ms)}S"


def mpd_root(attrs: dict[str, str]) -> etree._Element:
    """An MPD element of our profiles with ``attrs`` (its type and timing)."""
    return etree.Element(
        f"{{{MPD_NAMESPACE}}}MPD",
        nsmap={None: MPD_NAMESPACE},
        attrib={"profiles": PROFILES, **attrs},
    )


def mpd_element(parent: etree._Element, tag: str, **attrs: object) -> etree._Element:
    """A child element in the MPD namespace; attributes given as Python values."""
    return etree.SubElement(
        parent, f"{{{MPD_NAMESPACE}}}{tag}", {k: str(v) for k, v in attrs.items()}
    )


def _utc_timing(parent: etree._Element, time_url: str) -> None:
    mpd_element(parent, "UTCTiming", schemeIdUri=UTC_TIMING_SCHEME, value=time_url)


def latency_targets_ms(config: ChannelConfig) -> tuple[int, int, int]:
    """``(min, target, max)`` live latency: a few chunks, and at most a segment more.

    The target leaves a player three chunks of buffer (one being produced, one in
    flight, one playing); below two it would stall on any jitter. A player more than a
    segment behind its target (after a stall of seconds: an origin outage) should jump
    back rather than catch up at a few per cent, which would take minutes; dash.js seeks
    past ``max - target + 0.5 s`` of drift.
    """
    target = 3 * config.chunk_ms
    return 2 * config.chunk_ms, target, target + config.segment_ms


def _service_description(mpd: etree._Element, config: ChannelConfig) -> None:
    low, target, high = latency_targets_ms(config)
    service = mpd_element(mpd, "ServiceDescription", id=0)
    mpd_element(
        service, "Latency", referenceId=PRODUCER_REFERENCE_ID, target=target, min=low, max=high
    )
    mpd_element(service, "PlaybackRate", min=PLAYBACK_RATE_MIN, max=PLAYBACK_RATE_MAX)


def _set_timescale(reps: list[Representation], config: ChannelConfig) -> int:
    """The Representations' common timescale when D and C are whole in it, else ms."""
    scales = {r.timescale for r in reps}
    if len(scales) == 1:
        (scale,) = scales
        if scale > 0 and (config.chunk_ms * scale) % 1000 == 0:
            return scale
    return FALLBACK_TIMESCALE


def _adaptation_set(
    period: etree._Element,
    set_id: int,
    kind: str,
    reps: list[Representation],
    config: ChannelConfig,
    epoch: Epoch,
    time_urls: list[str],
) -> None:
    """One AdaptationSet: its LL-DASH descriptors, one SegmentTemplate, its Representations."""
    adaptation = adaptation_element(period, set_id, kind, reps)
    timescale = _set_timescale(reps, config)

    # RepresentationBaseType's sequence: ... ProducerReferenceTime, ..., Resync.
    prt = mpd_element(
        adaptation,
        "ProducerReferenceTime",
        id=PRODUCER_REFERENCE_ID,
        type="encoder",
        wallClockTime=iso_utc(epoch.start_ms),
        presentationTime=0,
    )
    _utc_timing(prt, time_urls[0])  # the clock wallClockTime is on (one element only)
    # Every chunk (moof+mdat) is a point a client may start parsing at; only the
    # segment's first is a SAP, so the guaranteed type is 0. dT is in the timescale.
    mpd_element(adaptation, "Resync", type=0, dT=config.chunk_ms * timescale // 1000)

    # AdaptationSetType's own sequence: ..., SegmentTemplate, Representation.
    mpd_element(
        adaptation,
        "SegmentTemplate",
        timescale=timescale,
        duration=config.segment_ms * timescale // 1000,
        startNumber=0,
        media=f"{epoch.id}/$RepresentationID$/$Number$.m4s",
        initialization=f"{epoch.id}/$RepresentationID$/init.mp4",
        availabilityTimeOffset=seconds(config.segment_ms - config.chunk_ms),
        availabilityTimeComplete="false",
    )
    for rep in reps:
        representation_element(adaptation, rep)


def adaptation_element(
    period: etree._Element, set_id: int, kind: str, reps: list[Representation]
) -> etree._Element:
    """An empty AdaptationSet of ``reps`` (all of one ``kind``), live or on demand alike."""
    attrs: dict[str, object] = {
        "id": set_id,
        "contentType": kind,
        "mimeType": f"{kind}/mp4",
        "segmentAlignment": "true",
        "startWithSAP": 1,
    }
    if kind == "audio":
        attrs["lang"] = AUDIO_LANGUAGE
    else:
        attrs["maxWidth"] = max(r.width for r in reps)
        attrs["maxHeight"] = max(r.height for r in reps)
    return mpd_element(period, "AdaptationSet", **attrs)


def representation_element(adaptation: etree._Element, rep: Representation) -> None:
    attrs: dict[str, object] = {"id": rep.id, "bandwidth": rep.bandwidth, "codecs": rep.codecs}
    if rep.kind == "video":
        attrs.update(width=rep.width, height=rep.height, frameRate=rep.frame_rate, sar="1:1")
    else:
        attrs["audioSamplingRate"] = rep.sample_rate
    element = mpd_element(adaptation, "Representation", **attrs)
    if rep.kind == "audio":
        mpd_element(
            element,
            "AudioChannelConfiguration",
            schemeIdUri=AUDIO_CHANNELS_SCHEME,
            value=rep.channels,
        )


def live_mpd(
    config: ChannelConfig,
    epoch: Epoch,
    now_ms: int,
    time_urls: list[str],
    dvr_s: int = 0,
) -> etree._Element:
    """The MPD of ``epoch`` as published at ``now_ms``; ``time_urls`` answer UTCTiming, in
    the order a player tries them (dash.js moves to the next when one fails).

    ``dvr_s``: how far back a player may seek when the origin serves segments older than
    the live window from the archive (:mod:`live.archive`); the window's length otherwise."""
    if not time_urls:
        raise ValueError("an LL-DASH MPD needs at least one UTCTiming source")
    mpd = mpd_root(
        {
            "type": "dynamic",
            "availabilityStartTime": iso_utc(epoch.start_ms),
            "publishTime": iso_utc(now_ms),
            # The MPD of an epoch never changes; re-reading once a segment finds a new one.
            "minimumUpdatePeriod": duration(config.segment_ms),
            "timeShiftBufferDepth": duration(max(dvr_s, config.window_s) * 1000),
            "suggestedPresentationDelay": duration(latency_targets_ms(config)[1]),
            "minBufferTime": duration(config.segment_ms),
            "maxSegmentDuration": duration(config.segment_ms),
        },
    )
    # MPDtype's sequence: ServiceDescription, ..., Period, ..., UTCTiming.
    _service_description(mpd, config)
    period = mpd_element(mpd, "Period", id=epoch.id, start="PT0S")
    for set_id, kind in enumerate(("video", "audio"), start=1):
        reps = [r for r in epoch.representations if r.kind == kind]
        if reps:
            _adaptation_set(period, set_id, kind, reps, config, epoch, time_urls)
    for time_url in time_urls:
        _utc_timing(mpd, time_url)
    return mpd


def write_mpd(mpd: etree._Element) -> str:
    """The MPD as an XML document (UTF-8 declaration, indented for people reading it)."""
    text: bytes = etree.tostring(mpd, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return text.decode()


def render_mpd(
    config: ChannelConfig, epoch: Epoch, now_ms: int, time_urls: list[str], dvr_s: int = 0
) -> str:
    """The MPD text of ``epoch`` at ``now_ms`` (DESIGN.md §3)."""
    return write_mpd(live_mpd(config, epoch, now_ms, time_urls, dvr_s))
