"""Add a title: analyse, pick the per-title ladder, package, upload to the object store.

A title's objects live under ``vod/{title}/`` in the store.  The manifest is uploaded
last and is what makes a title exist (the origin serves a title only once its MPD is
there), so a failure part way leaves no playable half-title; the objects already
uploaded are taken back, as they are when the catalog refuses the title.  Bad input
fails before anything is uploaded.  A publication that died before it could take its
objects back (a killed process) leaves them without a manifest: they belong to no
title, so the next attempt at that id clears them before it uploads, and a retry
succeeds even where the new encode's bytes differ from the abandoned ones.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from kernel.channel_config import NAME_PATTERN
from kernel.objectstore import ObjectStore
from live.vod.analysis import Progress, analyse, read_clip
from live.vod.hull import Probe, select_rungs, upper_hull
from live.vod.package import MANIFEST, package

ANALYSIS_SECONDS = 10.0
RECORD = "archive.json"  # a live event's record (live.archive_title): not served, not media

Announce = Callable[[list[Probe]], Awaitable[None]]


class TitleError(Exception):
    """The title cannot be added as asked (bad id, already published)."""


class TitleExists(TitleError):
    """The id is taken (ALREADY_EXISTS): by a published title, or by a live event being
    archived under it, whose segments a publication would otherwise clear as abandoned."""


@dataclass(frozen=True)
class Progressions:
    """Where ``add_title`` reports each phase's progress: ``(done, total)`` callbacks."""

    analysis: Progress | None = None
    encode: Progress | None = None
    upload: Progress | None = None


def title_prefix(title: str) -> str:
    """The store directory of a title's objects; :class:`TitleError` for a bad id."""
    if not NAME_PATTERN.match(title):
        raise TitleError(f"invalid title id {title!r}")
    return f"vod/{title}"


def manifest_name(title: str) -> str:
    return f"{title_prefix(title)}/{MANIFEST}"


def record_object(title: str) -> str:
    """Where the archive keeps the record of the live event ``title`` is (if it is one)."""
    return f"{title_prefix(title)}/{RECORD}"


async def add_title(
    source: str,
    title: str,
    store: ObjectStore,
    *,
    analysis_seconds: float = ANALYSIS_SECONDS,
    progress: Progressions = Progressions(),
    announce: Announce | None = None,
) -> list[Probe]:
    """Publish ``source`` as ``title``; the ladder's rungs, cheapest first.

    ``announce`` runs once the media is in the store (it adds the title to the catalog);
    if it fails, the upload is taken back, so a title is published everywhere or nowhere.
    """
    await check_unpublished(store, title)
    clip = await asyncio.to_thread(read_clip, source, analysis_seconds)
    probes = await asyncio.to_thread(analyse, clip, progress=progress.analysis)
    rungs = select_rungs(upper_hull(probes))
    with tempfile.TemporaryDirectory(prefix="vod-") as tmp:
        out = Path(tmp)
        await asyncio.to_thread(package, source, rungs, out, progress.encode)
        await clear_abandoned(store, title)
        done: list[str] = []
        try:
            await upload(store, title, out, done, progress.upload)
            if announce is not None:
                await announce(rungs)
        except BaseException:
            for name in done:
                await store.delete(name)
            raise
    return rungs


async def check_unpublished(store: ObjectStore, title: str) -> None:
    """:class:`TitleExists` when ``title`` is published, or is a live event's archive (the
    event's title once it ends: its objects are no abandoned publication)."""
    if await store.size(manifest_name(title)) is not None:
        raise TitleExists(f"already exists: title {title!r} is already published")
    if await store.size(record_object(title)) is not None:
        raise TitleExists(
            f"already exists: title {title!r} is a live event being archived "
            f"({record_object(title)}), to become that event's title; choose another id"
        )


async def clear_abandoned(store: ObjectStore, title: str) -> None:
    """Delete what an unfinished publication of ``title`` left (it has no manifest and is
    no event's archive: checked again, as an archive may have begun during the encode)."""
    await check_unpublished(store, title)
    for name in await store.names(title_prefix(title)):
        await store.delete(name)


async def upload(
    store: ObjectStore, title: str, directory: Path, done: list[str], progress: Progress | None
) -> None:
    """Every file of ``directory`` under the title, the manifest last; each name stored is
    appended to ``done`` (what to take back if the publication fails)."""
    prefix = title_prefix(title)
    files = [*sorted(p for p in directory.iterdir() if p.name != MANIFEST), directory / MANIFEST]
    for path in files:
        name = f"{prefix}/{path.name}"
        await store.put(name, path.read_bytes())
        done.append(name)
        if progress is not None:
            progress(len(done), len(files))
