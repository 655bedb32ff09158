"""``PublishVodTitle`` and ``GetVodPublication``: an operator publishes a mezzanine that is
already in the object store (the gateway's upload puts it there) as a movie, and follows it.

**An operation resource, not a server stream.** ``PublishVodTitle`` returns at once with a
``vodPublications/{id}`` that ``GetVodPublication`` reads (stage, fraction done, then the
title or the reason it failed). The gateway maps unary RPCs to HTTP routes and its OpenAPI
document from one table; a browser polls a GET carrying its ``Authorization`` header,
which an ``EventSource`` cannot send; and an encode that takes minutes outlives a dropped
connection or a reloaded console: the operator comes back to the publication by its name,
where a server stream would have cancelled the work with the call.

**The encode runs in a child process**: ``livemesh vod add OBJECT --from-store --progress
json --handshake`` (:mod:`command.vod_json`), the operator's own command. The event loop
only reads its progress lines, so the service keeps answering while it encodes; a decoder
that crashes on a corrupt file takes the child down, not the catalog; and the catalog
imports nothing of the data plane's packaging. At most ``slots`` encodes run at once (the
rest wait, QUEUED). Once the media is stored the child waits; the catalog adds the title
and answers ``publish``, or the child takes its upload back: a title is in the store and
the catalog together or in neither, and a failed publication can simply be started again.

Bad input is refused before anything starts where it can be seen cheaply (a bad id, an
unknown or oversized source, a taken title: the call's status); what only the encode finds
(not a video, corrupt) ends the publication FAILED with ``INVALID_ARGUMENT`` and the reason.

**Publications are rows of the catalog's database** (:mod:`.publication_records`), so
``GetVodPublication`` answers after a restart and from any catalog replica. The instance
running one keeps its live state in memory and rewrites its row every ``flush_s`` (the
replicas read it from there, that much behind); that rewrite is its lease. A catalog that
stops marks its running publications FAILED (``UNAVAILABLE``: publish again); one that
dies leaves rows nobody rewrites, which any instance marks so once the lease has lapsed
(at its start and every ``sweep_s``). The command clears what a dead child left.

**The uploaded source is deleted once it has served**: when the title is published, and
when the publication failed because of the source itself (not a video, gone: no retry of
it can succeed). After any other failure (a stopped catalog, an encoder crash, a title id
taken meanwhile) it is kept ``source_keep_s`` (a day) for the operator to retry, then
deleted by the sweep unless a running publication reads it: a retry needs no new upload
of a large file, and the store does not fill with sources nobody will retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp

from kernel.clock import now_ms
from kernel.objectstore import InvalidName, ObjectStore, check_name
from kernel.rpc import validate
from kernel.rpc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from livemesh.catalog.v1 import catalog_pb2 as pb
from services.catalog.feed import announce
from services.catalog.publication_records import ENDED, PublicationRecords
from services.catalog.store import CatalogStore

log = logging.getLogger(__name__)

Stage: TypeAlias = pb.VodPublicationStage
STAGE_DONE, STAGE_FAILED = pb.VOD_PUBLICATION_STAGE_DONE, pb.VOD_PUBLICATION_STAGE_FAILED
TAKE_BACK_S = 60.0  # a stored child's time to delete its upload once the catalog said no
# failures no retry of the same source can mend: the source is deleted at once
SOURCE_FAULTS = ("INVALID_ARGUMENT", "NOT_FOUND")
STOPPED = "the catalog stopped during the publication: publish it again"
ABANDONED = "the catalog running the publication stopped answering: publish it again"
# each phase's share of the whole, in order: where the fraction done starts and ends
SHARES = {
    pb.VOD_PUBLICATION_STAGE_FETCH: (0.0, 0.05),
    pb.VOD_PUBLICATION_STAGE_ANALYSIS: (0.05, 0.35),
    pb.VOD_PUBLICATION_STAGE_ENCODE: (0.35, 0.85),
    pb.VOD_PUBLICATION_STAGE_UPLOAD: (0.85, 0.97),
    pb.VOD_PUBLICATION_STAGE_CATALOG: (0.97, 1.0),
}
STAGES: dict[str, Stage] = {
    "fetch": pb.VOD_PUBLICATION_STAGE_FETCH,
    "analysis": pb.VOD_PUBLICATION_STAGE_ANALYSIS,
    "encode": pb.VOD_PUBLICATION_STAGE_ENCODE,
    "upload": pb.VOD_PUBLICATION_STAGE_UPLOAD,
}
# the child's reasons (class names, command/vod_json.py) as the statuses they are
CODES = {
    "BadMedia": "INVALID_ARGUMENT",
    "FFmpegError": "INVALID_ARGUMENT",
    "InvalidDataError": "INVALID_ARGUMENT",
    "TitleExists": "ALREADY_EXISTS",
    "TitleError": "INVALID_ARGUMENT",
    "ObjectNotFound": "NOT_FOUND",
}


class Failed(Exception):
    """A publication ends FAILED with this status name and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Upkeep:
    """How often a running publication's row is rewritten (its lease's heartbeat), how
    long unwritten makes it abandoned, how long a source is kept for a retry, how long an
    ended publication is kept, and how often all that is swept."""

    flush_s: float = 2.0
    lease_s: float = 30.0
    source_keep_s: float = 24 * 3600.0
    record_keep_s: float = 30 * 24 * 3600.0
    sweep_s: float = 60.0


@dataclass(frozen=True)
class Stored:
    """What the child says once the media is in the store."""

    seconds: int


class Publications:
    """Publications of ``store``'s mezzanines (whose URL the child opens again), as titles
    of ``catalog``; sources over ``max_source_bytes`` are refused."""

    def __init__(
        self,
        store: ObjectStore | None,
        store_url: str | None,
        catalog: CatalogStore,
        max_source_bytes: int,
        slots: int = 1,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.store = store
        self.store_url = store_url
        self.catalog = catalog
        self.records = PublicationRecords(catalog.engine)
        self.max_source_bytes = max_source_bytes
        self.slots = asyncio.Semaphore(slots)
        self.upkeep = upkeep or Upkeep()
        self.owner = os.urandom(8).hex()  # this instance, in the rows it runs
        self.running: dict[str, pb.VodPublication] = {}  # this instance's, live
        self.in_flight: set[str] = set()  # title ids being published
        self.tasks: set[asyncio.Task[None]] = set()
        self.keeper: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Mark abandoned publications FAILED, then keep the rows up (once migrated)."""
        await self._sweep()
        self.keeper = asyncio.create_task(self._keep())

    async def get(self, name: str) -> pb.VodPublication:
        validate.parse_name(name, "name", "vodPublications")
        record = self.running.get(name) or await self.records.get(name)
        if record is None:
            raise NotFound(f"{name} not found")
        return record

    async def start(self, request: pb.PublishVodTitleRequest) -> pb.VodPublication:
        """Check the request, then start the publication; its record as it starts."""
        title_id = validate.resource_id(request.title_id, "title_id")
        validate.text(request.display_title, "display_title", 1, 200)
        source = validate.required(request.source_object, "source_object")
        try:
            check_name(source)
        except InvalidName as error:
            raise InvalidArgument("source_object", str(error)) from None
        if self.store is None or self.store_url is None:
            raise FailedPrecondition("this catalog has no VOD store (LIVEMESH_VOD_STORE)")
        if title_id in self.in_flight:
            raise AlreadyExists(f"titles/{title_id} is being published")
        self.in_flight.add(title_id)
        try:
            await self._check(title_id, source)
            record = await self._new(title_id, source)
        except BaseException:
            self.in_flight.discard(title_id)
            raise
        task = asyncio.create_task(self._run(record, request.display_title))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return record

    async def _check(self, title_id: str, source: str) -> None:
        assert self.store is not None
        if await self.catalog.get(f"titles/{title_id}") is not None:
            raise AlreadyExists(f"titles/{title_id} already exists")
        size = await self.store.size(source)
        if size is None:
            raise NotFound(f"source_object: no object {source!r} in the store")
        if size == 0:
            raise InvalidArgument("source_object", "the object is empty")
        if size > self.max_source_bytes:
            raise InvalidArgument(
                "source_object",
                f"{size} bytes is over the limit of {self.max_source_bytes} bytes",
            )

    async def _new(self, title_id: str, source: str) -> pb.VodPublication:
        now = Timestamp()
        now.GetCurrentTime()
        record = pb.VodPublication(
            name=f"vodPublications/{os.urandom(8).hex()}",
            title_id=title_id,
            source_object=source,
            stage=pb.VOD_PUBLICATION_STAGE_QUEUED,
            create_time=now,
            update_time=now,
        )
        await self.records.add(record, self.owner, now_ms())
        self.running[record.name] = record
        return record

    async def _run(self, record: pb.VodPublication, display_title: str) -> None:
        try:
            async with self.slots:
                title = await self._publish(record, display_title)
            _set(record, pb.VOD_PUBLICATION_STAGE_DONE, 1.0)
            record.title.CopyFrom(title)
        except Failed as failed:
            _fail(record, failed.code, failed.message)
        except ServiceError as error:
            _fail(record, error.code.name, error.message)
        except Exception:
            log.exception("publication %s of %s failed", record.name, record.title_id)
            _fail(record, "INTERNAL", "the publication failed unexpectedly (see the catalog log)")
        finally:
            self.in_flight.discard(record.title_id)
        try:
            await self._ended(record)
        except Exception:  # the row is rewritten with the rest of the running ones
            log.exception("recording the end of publication %s failed", record.name)

    async def _ended(self, record: pb.VodPublication) -> None:
        """Write the ended ``record``; delete its source if it has served (module doc)."""
        await self.records.save([record], self.owner, now_ms())
        self.running.pop(record.name, None)
        if record.stage == STAGE_DONE or record.error_code in SOURCE_FAULTS:
            await self._delete_source(record.source_object)

    async def _delete_source(self, source: str) -> None:
        """Delete ``source`` unless a running publication reads it."""
        assert self.store is not None
        if await self.records.in_use(source):
            return
        await self.store.delete(source)
        await self.records.let_go(source)

    async def _keep(self) -> None:
        """Rewrite this instance's running rows every ``flush_s``; sweep every ``sweep_s``.
        A database that is down costs a round, not the loop."""
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(self.upkeep.flush_s)
            try:
                await self.records.save(list(self.running.values()), self.owner, now_ms())
                for name in [n for n, r in self.running.items() if r.stage in ENDED]:
                    del self.running[name]  # written now; its end could not be before
                if time.monotonic() - last_sweep >= self.upkeep.sweep_s:
                    last_sweep = time.monotonic()
                    await self._sweep()
            except Exception:
                log.exception("keeping the VOD publications' rows failed (retried)")

    async def _sweep(self) -> None:
        """Fail abandoned publications, delete sources past their keep, forget old rows."""
        now = now_ms()
        for record, owner, written in await self.records.abandoned(
            now - int(self.upkeep.lease_s * 1000)
        ):
            _fail(record, "UNAVAILABLE", ABANDONED)
            await self.records.take_over(record, (owner, written), self.owner, now)
        if self.store is not None:
            for source in await self.records.expired_sources(
                now - int(self.upkeep.source_keep_s * 1000)
            ):
                await self._delete_source(source)
        await self.records.forget(now - int(self.upkeep.record_keep_s * 1000))

    async def _publish(self, record: pb.VodPublication, display_title: str) -> pb.Title:
        """Run the child to the stored media, add the title, let the child finish."""
        child = await asyncio.create_subprocess_exec(
            *self._command(record),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        stored: Stored | None = None
        try:
            stored = await _follow(child.stdout, record)
            title = pb.Title(
                name=f"titles/{record.title_id}",
                kind=pb.TITLE_KIND_MOVIE,
                display_title=display_title,
                duration_seconds=stored.seconds,
            )
            _set(record, pb.VOD_PUBLICATION_STAGE_CATALOG, 0.0)
            created = await self.catalog.create(title)
            child.stdin.write(b"publish\n" if created else b"abandon\n")
            await child.stdin.drain()
            if not created:  # the child's reason is that it was told no: ours is why
                with contextlib.suppress(Failed):
                    await _finished(child)
                raise Failed("ALREADY_EXISTS", f"titles/{record.title_id} already exists")
            await _finished(child)
            await announce(self.catalog.redis, title)
            return title
        finally:
            await _stop(child, stored is not None)

    def _command(self, record: pb.VodPublication) -> list[str]:
        assert self.store_url is not None
        return [
            *(sys.executable, "-m", "command.cli", "vod", "add", record.source_object),
            *("--from-store", "--store", self.store_url, "--title", record.title_id),
            *("--progress", "json", "--handshake"),
        ]

    async def close(self) -> None:
        """Stop every publication (their children are killed, nothing is published) and
        mark it FAILED, retryable."""
        if self.keeper is not None:
            self.keeper.cancel()
            await asyncio.gather(self.keeper, return_exceptions=True)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        stopped = list(self.running.values())
        for record in stopped:
            _fail(record, "UNAVAILABLE", STOPPED)
        try:
            await self.records.save(stopped, self.owner, now_ms())
        except Exception:  # their lease lapses instead: the next sweep marks them
            log.exception("marking %d stopped publications failed", len(stopped))
        if self.store is not None:
            await self.store.close()


async def _follow(lines: asyncio.StreamReader, record: pb.VodPublication) -> Stored:
    """Progress lines into ``record`` until the child says its media is stored."""
    async for raw in lines:
        line = _parsed(raw)
        if "stage" in line:
            fraction = line["done"] / max(line["total"], 1)
            _set(record, STAGES[line["stage"]], min(fraction, 1.0))
        elif "ready" in line:
            return Stored(int(line["seconds"]))
        elif "failed" in line:
            raise Failed(CODES.get(line["failed"], "INTERNAL"), line["message"])
    raise Failed("INTERNAL", "the encoder stopped before the media was stored")


async def _finished(child: asyncio.subprocess.Process) -> None:
    """Wait for the child's last word (``published``, or the reason it took the upload back)."""
    assert child.stdout is not None
    async for raw in child.stdout:
        if "failed" in (line := _parsed(raw)):
            raise Failed(CODES.get(line["failed"], "INTERNAL"), line["message"])
    if await child.wait() != 0:
        raise Failed("INTERNAL", f"the encoder exited with status {child.returncode}")


async def _stop(child: asyncio.subprocess.Process, stored: bool) -> None:
    """End a child that has not exited: one whose media is stored is told (end of input) to
    take its upload back, and given the time to; one still encoding is killed (it stored
    no manifest, so nothing of it is a title, and the next attempt clears its objects)."""
    if child.returncode is not None:
        return
    if stored and child.stdin is not None:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), TAKE_BACK_S)
            return
        except TimeoutError:
            log.warning("the encoder of pid %d did not take its upload back in time", child.pid)
    child.kill()
    await child.wait()


def _parsed(raw: bytes) -> dict[str, Any]:
    """One line of the child's: a JSON object, else nothing it says (a library's stray print)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return {}
    return line if isinstance(line, dict) else {}


def _set(record: pb.VodPublication, stage: Stage, fraction: float) -> None:
    """Move ``record`` to ``stage``, ``fraction`` of the way through it."""
    start, end = SHARES.get(stage, (1.0, 1.0))
    record.stage = stage
    record.fraction_done = max(record.fraction_done, start + (end - start) * fraction)
    record.update_time.GetCurrentTime()


def _fail(record: pb.VodPublication, code: str, message: str) -> None:
    record.stage = pb.VOD_PUBLICATION_STAGE_FAILED
    record.error_code = code
    record.error_message = message
    record.update_time.GetCurrentTime()
