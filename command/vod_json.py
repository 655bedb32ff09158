"""``livemesh vod add OBJECT --from-store --progress json --handshake``: the publication the
catalog service drives (``CatalogService.PublishVodTitle``, :mod:`services.catalog.vod`).

The catalog runs this command as a child process, so the encode never runs on its event
loop and a crash in a decoder cannot take the service down. It speaks JSON lines on
stdout, one object each:

- ``{"stage": "fetch"|"analysis"|"encode"|"upload", "done": N, "total": M}`` as each
  phase moves (at most once per whole percent of a phase);
- ``{"ready": true, "seconds": S, "ladder": "..."}`` once the media is in the store; with
  ``--handshake`` it then waits for one line on stdin: ``publish`` keeps the upload (the
  catalog has added the title), anything else (or end of input) takes it back, so a title
  is in the catalog and the store together or in neither;
- ``{"published": ID, "ladder": "..."}`` at the end, or
  ``{"failed": KIND, "message": "..."}`` where KIND names the reason's class
  (``BadMedia``, ``TitleExists``, ``TitleError``, ``ObjectNotFound``...).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import av

from kernel.objectstore import ObjectNotFound, ObjectStore
from live.vod.analysis import Progress
from live.vod.hull import Probe
from live.vod.publish import Announce, Progressions, TitleError

# the encode's priority under a service (before any thread starts: its threads inherit it)
BACKGROUND_NICE = 10
FETCH_BYTES = 4 << 20  # one ranged read of the source: memory stays bounded for any size
_write_lock = threading.Lock()  # progress comes from the encode's worker threads


def emit(**fields: Any) -> None:
    """One JSON line on stdout, whole, whichever thread writes it."""
    with _write_lock:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def json_progress(stage: str) -> Progress:
    """A phase's progress as JSON lines, at most one per whole percent (and the last)."""
    shown = -1

    def report(done: int, total: int) -> None:
        nonlocal shown
        percent = 100 * done // max(total, 1)
        if percent != shown or done >= total:
            shown = percent
            emit(stage=stage, done=done, total=total)

    return report


def json_progressions() -> Progressions:
    return Progressions(json_progress("analysis"), json_progress("encode"), json_progress("upload"))


def seconds_of(path: str) -> int:
    """The file's running time, whole seconds (what the catalog lists)."""
    with av.open(path) as container:
        return round((container.duration or 0) / av.time_base)


async def fetch(store: ObjectStore, name: str, path: Path, progress: Progress) -> None:
    """Copy the object ``name`` to ``path`` in ranged reads; :class:`ObjectNotFound` if absent."""
    size = await store.size(name)
    if size is None:
        raise ObjectNotFound(f"no object {name!r} in the store")
    with path.open("wb") as out:
        for first in range(0, size, FETCH_BYTES):
            chunk = await store.get(name, first, min(first + FETCH_BYTES, size) - 1)
            await asyncio.to_thread(out.write, chunk)
            progress(first + len(chunk), size)


@asynccontextmanager
async def source_path(store: ObjectStore, name: str) -> AsyncIterator[str]:
    """A local copy of the stored mezzanine ``name``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="vod-source-") as tmp:
        path = Path(tmp) / "source"
        await fetch(store, name, path, json_progress("fetch"))
        yield str(path)


def handshake(source: str, wait: bool) -> Announce:
    """Say the media is stored; with ``wait``, publish only on the driver's ``publish``."""

    async def announce(rungs: list[Probe]) -> None:
        emit(ready=True, seconds=seconds_of(source), ladder=describe(rungs))
        if not wait:
            return
        answer = await asyncio.to_thread(sys.stdin.readline)
        if answer.strip() != "publish":
            raise TitleError("the catalog did not take the title: the upload is taken back")

    return announce


def describe(rungs: list[Probe]) -> str:
    return ", ".join(f"{r.height}p crf {r.crf} ~{r.kbps:.0f} kb/s" for r in rungs)


def failed(error: BaseException) -> None:
    emit(failed=type(error).__name__, message=str(error))
