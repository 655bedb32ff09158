"""The origin's VOD routes: ``/vod/{title}/{object}`` straight from the object store.

A title exists once its manifest is in the store (:mod:`live.vod.publish` uploads it
last).  Every object of a title, the static MPD included, is immutable under its
name, so all of it is cached for a year; errors are short-lived like the live ones.
Byte ranges (one range, RFC 9110) are answered with 206 from a ranged store read.
"""

from __future__ import annotations

import re

from aiohttp import web

from kernel.objectstore import ObjectNotFound, ObjectStore
from live.http_errors import BadRequest, NotFound, OriginError
from live.vod.publish import TitleError, manifest_name, title_prefix

IMMUTABLE = "public, max-age=31536000, immutable"
OBJECT_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
CONTENT_TYPES = {".mpd": "application/dash+xml", ".mp4": "video/mp4", ".m4s": "video/mp4"}
STORE = web.AppKey("vod_store", ObjectStore)


class RangeNotSatisfiable(OriginError):
    status = 416


def mount(app: web.Application, store: ObjectStore) -> None:
    """Serve the titles of ``store`` from ``app`` under ``/vod/``."""
    app[STORE] = store
    app.router.add_get("/vod/{title}/{name}", handle_object)


async def handle_object(request: web.Request) -> web.Response:
    store = request.app[STORE]
    title, name = request.match_info["title"], request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not OBJECT_NAME.match(name) or ".." in name or suffix not in CONTENT_TYPES:
        raise BadRequest("invalid object name")
    try:
        prefix = title_prefix(title)
    except TitleError:
        raise BadRequest("invalid title id") from None
    if await store.size(manifest_name(title)) is None:
        raise NotFound("unknown title")
    size = await store.size(f"{prefix}/{name}")
    if size is None:
        raise NotFound("no such object")
    headers = {
        "Content-Type": CONTENT_TYPES[suffix],
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
    }
    first, last, status = 0, size - 1, 200
    try:
        wanted = request.http_range  # aiohttp's parser: a slice, or ValueError if malformed
    except ValueError:
        wanted = slice(None, None)
    if wanted.start is not None or wanted.stop is not None:
        first, last = _bounds(wanted, size)
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        status = 206
    try:
        body = await store.get(f"{prefix}/{name}", first, last)
    except ObjectNotFound:
        raise NotFound("no such object") from None
    return web.Response(status=status, body=body, headers=headers)


def _bounds(wanted: slice, size: int) -> tuple[int, int]:
    """Inclusive byte bounds of a parsed range; 416 when it starts past the end."""
    start, stop = wanted.start or 0, wanted.stop
    if start < 0:  # a suffix range, ``bytes=-N``: the last N bytes
        start = max(0, size + start)
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise RangeNotSatisfiable("range not satisfiable")
    return start, stop - 1
