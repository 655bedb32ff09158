"""The origin's manifests: the LL-DASH MPD and the LL-HLS playlists, rendered from the
channel's config and current epoch.

A blocking playlist reload is held on the channel's chunk events (:mod:`live.hls`) until
the segment or part it asks for exists, for at most :func:`live.hls.hold_s`.
"""

from __future__ import annotations

import time

from aiohttp import web

from kernel import clock
from kernel.channel_config import NAME_PATTERN, ChannelConfig
from kernel.epoch import Epoch, Position, Representation
from kernel.http.time import TIME_PATH
from live.hls import (
    MULTIVARIANT_NAME,
    PLAYLIST_CONTENT_TYPE,
    PLAYLIST_SUFFIX,
    PlaylistRequestError,
    ReloadQuery,
    RenditionView,
    awaited_segment,
    cache_control,
    hold_s,
    media_playlist,
    multivariant_playlist,
    parse_reload_query,
    parted_segments,
    reload_ready,
)
from live.http_errors import BadRequest, HoldExpired, NotFound
from live.mpd import render_mpd
from live.origin_context import ORIGIN, Origin, channel_name
from live.state import ChannelStore

MANIFEST_CACHE = "public, max-age=1"  # ≤ 1 s: a player sees a new epoch within a second
MPD_CONTENT_TYPE = "application/dash+xml"


async def handle_manifest(request: web.Request) -> web.Response:
    origin = request.app[ORIGIN]
    store = origin.store(channel_name(request))
    config, epoch = await _on_air(store)
    time_urls = origin.time_urls or [f"http://{request.host}{TIME_PATH}"]
    return web.Response(
        text=render_mpd(config, epoch, clock.now_ms(), time_urls, origin.dvr_s),
        content_type=MPD_CONTENT_TYPE,
        headers={"Cache-Control": MANIFEST_CACHE},
    )


async def _on_air(store: ChannelStore) -> tuple[ChannelConfig, Epoch]:
    config = await store.get_config()
    if config is None:
        raise NotFound("unknown channel")
    epoch = await store.current_epoch()
    if epoch is None:
        raise NotFound("channel is off air")
    return config, epoch


async def handle_playlist(request: web.Request) -> web.Response:
    """The multivariant playlist or a rendition's media playlist (LL-HLS, :mod:`live.hls`)."""
    origin = request.app[ORIGIN]
    store = origin.store(channel_name(request))
    name = request.match_info["name"]
    if not name.endswith(PLAYLIST_SUFFIX):
        raise NotFound("no such object")
    try:
        query = parse_reload_query(request.query)
    except PlaylistRequestError as exc:
        raise BadRequest(str(exc)) from exc
    config, epoch = await _on_air(store)
    if name == MULTIVARIANT_NAME:
        text = multivariant_playlist(config, epoch)
    else:
        rep_id = name.removesuffix(PLAYLIST_SUFFIX)
        if not NAME_PATTERN.match(rep_id):
            raise BadRequest("invalid rendition name")
        rep = epoch.representation(rep_id)
        if rep is None:
            raise NotFound("unknown rendition")
        try:
            await _await_reload(origin, store, epoch, rep, config, query)
        except PlaylistRequestError as exc:
            raise BadRequest(str(exc)) from exc
        view, reports = await _rendition_view(store, epoch, rep)
        text = media_playlist(config, epoch, view, reports, skip=query.skip)
    return web.Response(
        text=text,
        content_type=PLAYLIST_CONTENT_TYPE,
        headers={"Cache-Control": cache_control(query, config)},
    )


async def _await_reload(
    origin: Origin,
    store: ChannelStore,
    epoch: Epoch,
    rep: Representation,
    config: ChannelConfig,
    query: ReloadQuery,
) -> None:
    """Hold a blocking reload until its segment or part exists, at most :func:`hold_s`."""
    if reload_ready(query, await store.position(epoch.id, rep.id), config):
        return
    deadline = time.monotonic() + hold_s(config)
    awaited = awaited_segment(query, config)
    async with origin.fanout.watch(store.channel, epoch.id, rep.id, awaited) as watch:
        with origin.metrics.held.track_inprogress():
            # Registered before this re-read, so no chunk published after it goes unseen.
            while not reload_ready(query, await store.position(epoch.id, rep.id), config):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await watch.next(remaining):
                    raise HoldExpired("playlist update not produced in time")


async def _rendition_view(
    store: ChannelStore, epoch: Epoch, rep: Representation
) -> tuple[RenditionView, dict[str, Position]]:
    """The rendition's position and part sizes, and every rendition's position, agreeing."""
    position = await store.position(epoch.id, rep.id)
    for _attempt in range(3):  # the encoder may start a segment between the two reads
        if position is None:
            break
        wanted = parted_segments(position)
        positions, sizes = await store.positions_and_sizes(epoch.id, rep.id, wanted)
        position = positions.get(rep.id)
        if position is not None and parted_segments(position) == wanted:
            return RenditionView(rep, position, sizes), positions
    raise NotFound("rendition has no media yet")
