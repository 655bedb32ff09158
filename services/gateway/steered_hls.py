"""A session's LL-HLS multivariant playlist with HLS content steering (RFC 8216bis
§4.4.6.6 ``EXT-X-CONTENT-STEERING``; Apple's HLS Content Steering Specification).

The channel's multivariant playlist (the origin's, through an edge) names its media
playlists relative to itself, so a cache can share it. A session's copy names every
ranked edge as a Pathway: each variant and each audio rendition is repeated once per
edge, its URI made absolute under that edge's signed ``/t/{token}/`` directory, the
variant tagged ``PATHWAY-ID`` and the rendition group renamed per Pathway (a client
tells a failed audio playlist's Pathway by its group). ``EXT-X-CONTENT-STEERING`` names
the session's steering endpoint, whose manifest (``PATHWAY-PRIORITY``) is the one the
DASH players read, and the best edge as the Pathway to start on.

Pure text in, text out: the gateway only rewrites what an edge served.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MULTIVARIANT_NAME = "master.m3u8"  # beside the channel's MPD (live/hls.py)
PLAYLIST_MEDIA_TYPE = "application/vnd.apple.mpegurl"
MEDIA = "#EXT-X-MEDIA:"
VARIANT = "#EXT-X-STREAM-INF:"
STEERING = "#EXT-X-CONTENT-STEERING:"
# attribute-name=value, the value a quoted string or anything up to the next comma
ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\r\n]*)')
ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class BadPlaylist(ValueError):
    """The upstream multivariant playlist is not one this rewrite understands."""


def attributes(line: str, tag: str) -> dict[str, str]:
    """The attribute list after ``tag`` (quoted values keep their quotes)."""
    return dict(ATTRIBUTE.findall(line[len(tag) :]))


def attribute_line(tag: str, attrs: dict[str, str]) -> str:
    return tag + ",".join(f"{name}={value}" for name, value in attrs.items())


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def quote(value: str) -> str:
    return f'"{value}"'


def under(base: str, uri: str) -> str:
    """``uri`` resolved under the edge directory ``base`` (absolute URIs stay)."""
    return uri if ABSOLUTE.match(uri) else base + uri


def split_playlist(text: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(header lines, EXT-X-MEDIA lines, (EXT-X-STREAM-INF line, URI) pairs)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise BadPlaylist("not an M3U8 playlist")
    header: list[str] = []
    media: list[str] = []
    variants: list[tuple[str, str]] = []
    at = 0
    while at < len(lines):
        line = lines[at]
        if line.startswith(VARIANT):
            if at + 1 >= len(lines) or lines[at + 1].startswith("#"):
                raise BadPlaylist("a variant without its URI")
            variants.append((line, lines[at + 1]))
            at += 2
            continue
        if line.startswith(MEDIA):
            media.append(line)
        elif not line.startswith(STEERING):  # (the session's own replaces any given)
            header.append(line)
        at += 1
    if not variants:
        raise BadPlaylist("not a multivariant playlist: no variant")
    return header, media, variants


def pathway_group(group: str, pathway: str) -> str:
    return quote(f"{unquote(group)}.{pathway}")


def pathway_lines(
    media: list[str], variants: list[tuple[str, str]], pathway: str, base: str
) -> list[str]:
    """The renditions and variants of one Pathway, under its edge directory ``base``."""
    out = []
    for line in media:
        attrs = attributes(line, MEDIA)
        if "GROUP-ID" in attrs:
            attrs["GROUP-ID"] = pathway_group(attrs["GROUP-ID"], pathway)
        if "URI" in attrs:
            attrs["URI"] = quote(under(base, unquote(attrs["URI"])))
        out.append(attribute_line(MEDIA, attrs))
    for line, uri in variants:
        attrs = attributes(line, VARIANT)
        for group in ("AUDIO", "VIDEO", "SUBTITLES"):
            if group in attrs:
                attrs[group] = pathway_group(attrs[group], pathway)
        attrs["PATHWAY-ID"] = quote(pathway)
        # the same rendition on every Pathway, so a switch keeps the viewer's quality
        attrs.setdefault("STABLE-VARIANT-ID", quote(re.sub(r"[^A-Za-z0-9+/=._-]", "_", uri)))
        out += [attribute_line(VARIANT, attrs), under(base, uri)]
    return out


def steered_multivariant(text: str, pathways: Sequence[tuple[str, str]], steering_uri: str) -> str:
    """The channel's multivariant playlist ``text`` with one Pathway per ``pathways``
    ((Pathway ID, edge directory), best first) and ``EXT-X-CONTENT-STEERING`` naming
    ``steering_uri``."""
    if not pathways:
        raise BadPlaylist("the session has no edge")
    header, media, variants = split_playlist(text)
    steering = {"SERVER-URI": quote(steering_uri), "PATHWAY-ID": quote(pathways[0][0])}
    lines = [*header, attribute_line(STEERING, steering)]
    for pathway, base in pathways:
        lines += pathway_lines(media, variants, pathway, base)
    return "\n".join(lines) + "\n"
