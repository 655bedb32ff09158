"""What a virtual player needs from a live MPD, read once at start (pure).

Only the facts the player acts on: availabilityStartTime, segment and chunk durations,
the URL templates of the video and audio AdaptationSets, the rungs with their
bandwidths, the UTCTiming URLs (the edges' ``/time``) and the ServiceDescription's
``Latency@max`` (past it, the player jumps back to the live point).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

NS = {"m": "urn:mpeg:dash:schema:mpd:2011"}


@dataclass(frozen=True, slots=True)
class Track:
    kind: str  # "video" or "audio"
    media: str  # "EPOCH/$RepresentationID$/$Number$.m4s"
    init: str
    rungs: tuple[tuple[str, int], ...]  # (id, bandwidth), as listed

    def media_path(self, rung: str, number: int) -> str:
        return self.media.replace("$RepresentationID$", rung).replace("$Number$", str(number))

    def init_path(self, rung: str) -> str:
        return self.init.replace("$RepresentationID$", rung)


@dataclass(frozen=True, slots=True)
class LiveManifest:
    ast_s: float  # availabilityStartTime, UTC seconds
    segment_s: float
    chunk_s: float
    video: Track
    audio: Track | None
    time_urls: tuple[str, ...]  # UTCTiming sources, in the order a player tries them
    max_latency_s: float  # ServiceDescription Latency@max; without one, three segments

    def segment_available_s(self, number: int) -> float:
        """Wall-clock time the first chunk of segment ``number`` is due (availability)."""
        return self.ast_s + number * self.segment_s + self.chunk_s


def _utc_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_manifest(text: str) -> LiveManifest:
    """The player's view of an LL-DASH MPD; ``ValueError`` when it is not one."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"MPD is not XML: {exc}") from exc
    if root.get("type") != "dynamic" or root.get("availabilityStartTime") is None:
        raise ValueError("MPD is not a dynamic (live) presentation")
    ast = _utc_s(root.get("availabilityStartTime", ""))
    time_urls = tuple(
        value for t in root.iterfind("m:UTCTiming", NS) if (value := t.get("value", ""))
    )
    tracks: dict[str, Track] = {}
    segment_s = chunk_s = 0.0
    for adaptation in root.iterfind("m:Period/m:AdaptationSet", NS):
        kind = adaptation.get("contentType", "")
        template = adaptation.find("m:SegmentTemplate", NS)
        if template is None or kind not in ("video", "audio") or kind in tracks:
            continue
        scale = float(template.get("timescale", "1"))
        segment_s = float(template.get("duration", "0")) / scale
        offset = float(template.get("availabilityTimeOffset", "0"))
        chunk_s = round(segment_s - offset, 6) if offset else segment_s
        rungs = tuple(
            (r.get("id", ""), int(r.get("bandwidth", "0")))
            for r in adaptation.iterfind("m:Representation", NS)
        )
        tracks[kind] = Track(
            kind, template.get("media", ""), template.get("initialization", ""), rungs
        )
    if "video" not in tracks or segment_s <= 0 or chunk_s <= 0:
        raise ValueError("MPD has no video AdaptationSet with a SegmentTemplate")
    latency = root.find("m:ServiceDescription/m:Latency", NS)
    max_ms = latency.get("max") if latency is not None else None
    max_latency_s = float(max_ms) / 1000 if max_ms else 3 * segment_s
    return LiveManifest(
        ast, segment_s, chunk_s, tracks["video"], tracks.get("audio"), time_urls, max_latency_s
    )


def parse_http_date_ms(text: str) -> int:
    """An ``http-iso`` UTCTiming answer (``2026-01-01T00:00:00.123Z``) as UTC ms."""
    return round(_utc_s(text.strip()) * 1000)
