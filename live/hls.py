"""LL-HLS playlists of a live channel from the same CMAF chunks as the MPD (RFC 8216bis).

Pure functions of (config, epoch, positions, chunk sizes): the origin reads Redis and
holds blocking reloads; this module only decides and renders, as :mod:`live.mpd` does.

There is no second packager.  A Media Segment is the very ``{n}.m4s`` object the MPD
names, and each CMAF chunk (C, 0.2 s) is an ``EXT-X-PART`` addressed as a byte range
of that object.  So a cache holds one object per segment whichever protocol asked
for it, and fetches it from its parent once.  The Media Sequence Number of a segment
is its ``$Number$``; the Part Index is the chunk's index in it.

Playlists sit beside the MPD (``/live/{channel}/master.m3u8``, ``/live/{channel}/{rep}.m3u8``)
and name media relative to themselves, so a signed ``/t/{token}/`` prefix is inherited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from kernel.channel_config import ChannelConfig
from kernel.epoch import Epoch, Position, Representation
from live.mpd import iso_utc, seconds
from live.timing import HOLD_SEGMENTS

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
MULTIVARIANT_NAME = "master.m3u8"
PLAYLIST_SUFFIX = ".m3u8"
# EXT-X-SKIP needs version 9 (RFC 8216bis §7).
VERSION = 9
AUDIO_GROUP = "audio"
# PART-HOLD-BACK in part targets: the spec's floor is 2, and 3 leaves a part of slack.
PART_HOLD_BACK_PARTS = 3
# CAN-SKIP-UNTIL in target durations: the spec's floor (§4.4.3.8).
SKIP_UNTIL_TARGETS = 6
# Segments (the one in progress and the one before) whose chunks are listed as parts:
# more than PART-HOLD-BACK, and well inside the spec's three target durations.
PARTED_SEGMENTS = 2


class PlaylistRequestError(ValueError):
    """A playlist request the spec says to refuse at once (400), never to hold."""


@dataclass(frozen=True)
class ReloadQuery:
    """The delivery directives of a playlist request (§6.2.5)."""

    msn: int | None = None
    part: int | None = None
    skip: bool = False

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def _directive_number(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        raise PlaylistRequestError(f"{name} must be a non-negative decimal integer")
    return int(raw)


def parse_reload_query(query: Mapping[str, str]) -> ReloadQuery:
    """``_HLS_msn``, ``_HLS_part`` and ``_HLS_skip`` read; anything else (CMCD) ignored.

    ``_HLS_part`` without ``_HLS_msn`` is a 400 (§6.2.5.2); ``_HLS_skip`` is ``YES``
    (segments only: this playlist has no date ranges to skip) or absent.
    """
    msn = _directive_number(query, "_HLS_msn")
    part = _directive_number(query, "_HLS_part")
    if part is not None and msn is None:
        raise PlaylistRequestError("_HLS_part needs _HLS_msn")
    skip = query.get("_HLS_skip")
    if skip is not None and skip != "YES":
        raise PlaylistRequestError("_HLS_skip must be YES")
    return ReloadQuery(msn, part, skip == "YES")


def target_duration_s(config: ChannelConfig) -> int:
    """EXT-X-TARGETDURATION: whole seconds, no segment's EXTINF rounds above it."""
    return math.ceil(config.segment_ms / 1000)


def hold_s(config: ChannelConfig) -> float:
    """How long the origin holds a blocking reload before answering 503: as long as a held
    segment (§6.2.5.2 allows up to three target durations), the bound the edges' nested
    waits are built on, so no tier gives up before its parent."""
    return HOLD_SEGMENTS * config.segment_ms / 1000


def advance_part_limit(config: ChannelConfig) -> int:
    """How many parts past the last one a request may ask for (§6.2.5.2)."""
    if config.chunk_ms < 1000:
        return math.floor(3000 / config.chunk_ms)
    return 3


def _part_number(config: ChannelConfig, msn: int, part: int) -> int:
    return msn * config.timeline.chunks_per_segment + part


def reload_ready(query: ReloadQuery, position: Position | None, config: ChannelConfig) -> bool:
    """Whether a playlist rendered at ``position`` answers ``query`` (else: hold).

    Raises :class:`PlaylistRequestError` for a request too far ahead to hold: an msn
    more than two past the last segment, or a part beyond the Advance Part Limit.
    A request for something already gone by is answered at once.
    """
    if query.msn is None:
        return True
    last_segment = position.segment if position is not None else -1
    if query.msn > last_segment + 2:
        raise PlaylistRequestError("_HLS_msn is more than two segments ahead")
    if position is None:
        return False
    if query.part is None:
        return position.has_complete(query.msn)
    wanted = _part_number(config, query.msn, query.part)
    have = _part_number(config, position.segment, position.chunk)
    if wanted - have > advance_part_limit(config):
        raise PlaylistRequestError("_HLS_part is beyond the advance part limit")
    # A part index past a segment's last part asks for what follows it (the next part 0).
    return have >= wanted


def awaited_segment(query: ReloadQuery, config: ChannelConfig) -> int:
    """The segment whose chunk events can make a held ``query`` ready."""
    assert query.msn is not None
    if query.part is None:
        return query.msn
    return query.msn + query.part // config.timeline.chunks_per_segment


def first_segment(position: Position, config: ChannelConfig) -> int:
    """The oldest segment listed: the live window's, never one about to expire."""
    window = config.window_s * 1000 // config.segment_ms
    return max(0, position.segment - window + 1)


def parted_segments(position: Position) -> list[int]:
    """The segments whose parts a playlist at ``position`` lists (their chunk sizes needed)."""
    newest = position.segment
    return [n for n in range(newest - PARTED_SEGMENTS + 1, newest + 1) if n >= 0]


def playlist_name(rep_id: str) -> str:
    return f"{rep_id}{PLAYLIST_SUFFIX}"


def cache_control(query: ReloadQuery, config: ChannelConfig) -> str:
    """A blocking answer stays a true answer to its (msn, part) for as long as the delta
    updates reach back; a plain playlist (a player's first load) is a second old at most,
    as the MPD is."""
    if query.blocking:
        return f"public, max-age={SKIP_UNTIL_TARGETS * target_duration_s(config)}"
    return "public, max-age=1"


@dataclass(frozen=True)
class RenditionView:
    """What one media playlist is rendered from, read from Redis in one go."""

    rep: Representation
    position: Position
    part_sizes: Mapping[int, list[int]]  # segment -> its chunks' byte sizes


def _attrs(**values: object) -> str:
    """An attribute list; names with ``_`` become ``-`` (``LAST_MSN`` -> ``LAST-MSN``)."""
    return ",".join(f"{name.replace('_', '-')}={value}" for name, value in values.items())


def _quoted(value: str) -> str:
    return f'"{value}"'


def _parts(config: ChannelConfig, rep: Representation, uri: str, sizes: list[int]) -> list[str]:
    """EXT-X-PART lines for the chunks of one segment: consecutive byte ranges of it."""
    lines, offset = [], 0
    for index, size in enumerate(sizes):
        attrs: dict[str, object] = {
            "DURATION": seconds(config.chunk_ms),
            "URI": _quoted(uri),
            "BYTERANGE": _quoted(f"{size}@{offset}"),
        }
        # Video starts a GOP only at a segment's first chunk; every AAC frame is a sync sample.
        if index == 0 or rep.kind == "audio":
            attrs["INDEPENDENT"] = "YES"
        lines.append(f"#EXT-X-PART:{_attrs(**attrs)}")
        offset += size
    return lines


def _report(rep_id: str, position: Position) -> str:
    return "#EXT-X-RENDITION-REPORT:" + _attrs(
        URI=_quoted(playlist_name(rep_id)), LAST_MSN=position.segment, LAST_PART=position.chunk
    )


def media_playlist(
    config: ChannelConfig,
    epoch: Epoch,
    view: RenditionView,
    reports: Mapping[str, Position],
    skip: bool = False,
) -> str:
    """The LL-HLS media playlist of one rendition (``reports``: the other renditions').

    ``skip`` renders a delta update: segments more than CAN-SKIP-UNTIL before the
    end are replaced by one ``EXT-X-SKIP`` (§4.4.5.2).
    """
    rep, position = view.rep, view.position
    target = target_duration_s(config)
    skip_until_s = SKIP_UNTIL_TARGETS * target
    first = first_segment(position, config)
    last_whole = position.segment if position.complete else position.segment - 1
    skipped = 0
    if skip:
        end_ms = (position.segment + 1) * config.segment_ms
        while (first + skipped + 1) * config.segment_ms <= end_ms - skip_until_s * 1000:
            skipped += 1
        skipped = min(skipped, max(0, last_whole - first + 1))
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-SERVER-CONTROL:"
        + _attrs(
            CAN_BLOCK_RELOAD="YES",
            CAN_SKIP_UNTIL=skip_until_s,
            PART_HOLD_BACK=seconds(PART_HOLD_BACK_PARTS * config.chunk_ms),
        ),
        f"#EXT-X-PART-INF:PART-TARGET={seconds(config.chunk_ms)}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f'#EXT-X-MAP:URI="{epoch.id}/{rep.id}/init.mp4"',
    ]
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    start = first + skipped
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_utc(epoch.start_ms + start * config.segment_ms)}")
    segment_extinf = f"#EXTINF:{seconds(config.segment_ms)},"
    for number in range(start, position.segment + 1):
        uri = f"{epoch.id}/{rep.id}/{number}.m4s"
        sizes = view.part_sizes.get(number)
        if sizes is not None:
            lines += _parts(config, rep, uri, sizes)
        if number <= last_whole:
            lines += [segment_extinf, uri]
    lines.append(_preload_hint(epoch, rep, view))
    lines += [_report(rep_id, pos) for rep_id, pos in reports.items() if rep_id != rep.id]
    return "\n".join(lines) + "\n"


def _preload_hint(epoch: Epoch, rep: Representation, view: RenditionView) -> str:
    """The part after the last: the rest of the segment in progress, or the next one's start.

    Its length is unknown until the encoder cuts it, so only BYTERANGE-START is given.
    """
    position = view.position
    if position.complete:
        number, start = position.segment + 1, 0
    else:
        number, start = position.segment, sum(view.part_sizes.get(position.segment, []))
    uri = f"{epoch.id}/{rep.id}/{number}.m4s"
    return "#EXT-X-PRELOAD-HINT:" + _attrs(TYPE="PART", URI=_quoted(uri), BYTERANGE_START=start)


def multivariant_playlist(config: ChannelConfig, epoch: Epoch) -> str:
    """The multivariant playlist: one variant per video rung, all sharing the audio group."""
    audio = [r for r in epoch.representations if r.kind == "audio"]
    video = sorted(
        (r for r in epoch.representations if r.kind == "video"),
        key=lambda r: r.bandwidth,
        reverse=True,
    )
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for index, rep in enumerate(audio):
        lines.append(
            "#EXT-X-MEDIA:"
            + _attrs(
                TYPE="AUDIO",
                GROUP_ID=_quoted(AUDIO_GROUP),
                NAME=_quoted(rep.id),
                LANGUAGE=_quoted("und"),
                DEFAULT="YES" if index == 0 else "NO",
                AUTOSELECT="YES",
                CHANNELS=_quoted(str(rep.channels)),
                URI=_quoted(playlist_name(rep.id)),
            )
        )
    audio_bandwidth = max((r.bandwidth for r in audio), default=0)
    for rep in video:
        codecs = ",".join([rep.codecs, *sorted({a.codecs for a in audio})])
        attrs: dict[str, object] = {
            "BANDWIDTH": rep.bandwidth + audio_bandwidth,
            "CODECS": _quoted(codecs),
            "RESOLUTION": f"{rep.width}x{rep.height}",
            "FRAME-RATE": f"{rep.frame_rate:.3f}",
        }
        if audio:
            attrs["AUDIO"] = _quoted(AUDIO_GROUP)
        lines.append(f"#EXT-X-STREAM-INF:{_attrs(**attrs)}")
        lines.append(playlist_name(rep.id))
    return "\n".join(lines) + "\n"
