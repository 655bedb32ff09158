"""``livemesh vod add FILE --title ID``: publish a file as an on-demand title;
``livemesh vod preposition --edge URL ...``: push the forecast's titles into edges;
``livemesh vod archive CHANNEL``: archive a channel's events, each a title once it ends
(:mod:`live.archive`); ``livemesh vod publish-event CHANNEL --epoch ID``: the operator's
call that makes an archived event a title now (:mod:`live.archive_title`).

Analyses the file's per-title ladder, encodes and packages it as on-demand DASH,
uploads it to the object store (a directory or ``s3://bucket/prefix``) and, with
``--catalog``, adds it to the catalog (``CatalogService.CreateTitle``, as an operator:
the credential is minted with ``LIVEMESH_CREDENTIAL_KEY_FILE``, as ``livemesh admin
token`` does), showing each phase's progress on stderr.  Bad input, or a catalog that
refuses the title, ends with a one-line reason and exit status 1, with nothing published.
With ``--from-store`` FILE names a source already in the store; ``--progress json
--handshake`` is how the catalog service drives it (:mod:`command.vod_json`).

``preposition`` reads the view history from Redis (``REDIS_URL``), picks the ``--top``
published titles of the popularity forecast (:mod:`live.vod.preposition`) and has each
edge fill them through its admin API, with the admin key the edges are given
(``LIVEMESH_EDGE_ADMIN_KEY``: an environment setting, never a flag, as it is a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

import aiohttp
import av
import grpc

from command import vod_json
from command.vod_json import describe
from kernel.objectstore import DEFAULT_STORE, ObjectStore, ObjectStoreError, open_store
from kernel.redis_server import redis_client
from kernel.rpc import credentials
from kernel.rpc.auth import OPERATOR
from kernel.rpc.clients import RpcChannelFactory
from live.archive import Archiver, Ended
from live.archive_title import EventTitle, event_title, publish_event
from live.mpd import iso_utc
from live.state import ChannelStore
from live.vod.analysis import BadMedia, Progress
from live.vod.hull import Probe
from live.vod.preposition import plan, push
from live.vod.publish import ANALYSIS_SECONDS, Announce, Progressions, TitleError, add_title
from livemesh.catalog.v1 import catalog_pb2, catalog_pb2_grpc

T = TypeVar("T")
ADMIN_KEY_ENV = "LIVEMESH_EDGE_ADMIN_KEY"
OPERATOR_CREDENTIAL_ENV = "LIVEMESH_OPERATOR_CREDENTIAL"  # a secret: never a flag
BAR_WIDTH = 30
CATALOG_TIMEOUT_S = 10.0


def progress_bar(label: str, out: TextIO = sys.stderr) -> Progress:
    """A one-line bar redrawn in place; written by hand as the CLI needs nothing more."""

    def show(done: int, total: int) -> None:
        filled = BAR_WIDTH * done // max(total, 1)
        end = "\n" if done >= total else ""
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        out.write(f"\r{label:<9} [{bar}] {done}/{total}{end}")
        out.flush()

    return show


async def create_title(
    catalog: str, title_id: str, display_title: str, seconds: int, operator: str
) -> None:
    """``CatalogService.CreateTitle`` of a published movie, as the operator ``operator``:
    with the credential a long-running process is given (:data:`OPERATOR_CREDENTIAL_ENV`),
    else one minted with the credential key."""
    title = catalog_pb2.Title(
        kind=catalog_pb2.TITLE_KIND_MOVIE, display_title=display_title, duration_seconds=seconds
    )
    token = os.environ.get(OPERATOR_CREDENTIAL_ENV) or credentials.mint(
        credentials.signing_key_from_env(), OPERATOR, operator
    )
    auth = (("authorization", f"Bearer {token}"),)
    factory = RpcChannelFactory()
    try:
        stub = factory.stub(catalog_pb2_grpc.CatalogServiceStub, catalog)
        request = catalog_pb2.CreateTitleRequest(title_id=title_id, title=title)
        await stub.CreateTitle(request, metadata=auth, timeout=CATALOG_TIMEOUT_S)
    finally:
        await factory.close()


def catalog_entry(args: argparse.Namespace, path: str) -> Announce:
    """What adds the title to the catalog at ``args.catalog`` once the media of the file at
    ``path`` is stored."""

    async def announce(rungs: list[Probe]) -> None:
        display = args.display_title or args.title
        await create_title(args.catalog, args.title, display, vod_json.seconds_of(path), "vod-add")

    return announce


def event_entry(catalog: str | None) -> Ended | None:
    """What adds a published live event to the catalog (none without a catalog)."""
    if catalog is None:
        return None

    async def announce(event: EventTitle) -> None:
        start = iso_utc(event.archived.epoch.start_ms)
        display = f"{event.archived.channel} live, {start[:16].replace('T', ' ')} UTC"
        await create_title(catalog, event.title, display, round(event.seconds), "vod-archive")

    return announce


async def _archive(args: argparse.Namespace) -> None:
    """Run the archiver of one channel until SIGINT or SIGTERM."""
    redis, store = redis_client(args.redis_url), open_store(args.store)
    archiver = Archiver(ChannelStore(redis, args.channel), store, event_entry(args.catalog))
    following = asyncio.create_task(archiver.run())
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait({following, asyncio.create_task(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if following.done():
            following.result()  # raises what stopped it
    finally:
        following.cancel()
        await redis.aclose()
        await store.close()


async def _publish_event(args: argparse.Namespace) -> EventTitle:
    store = open_store(args.store)
    try:
        published = await publish_event(store, event_title(args.channel, args.epoch))
    finally:
        await store.close()
    announce = event_entry(args.catalog)
    if announce is not None:
        await announce(published)
    return published


async def _add(args: argparse.Namespace) -> list[Probe]:
    store = open_store(args.store)
    try:
        if args.from_store:
            async with vod_json.source_path(store, args.file) as path:
                return await _add_file(args, store, path)
        return await _add_file(args, store, args.file)
    finally:
        await store.close()


async def _add_file(args: argparse.Namespace, store: ObjectStore, path: str) -> list[Probe]:
    """Publish the file at ``path``: progress as bars on stderr, or JSON lines on stdout
    with the catalog's handshake (:mod:`command.vod_json`)."""
    if args.progress == "json":
        progress = vod_json.json_progressions()
        announce: Announce | None = vod_json.handshake(path, args.handshake)
    else:
        progress = Progressions(
            progress_bar("analysis"), progress_bar("encode"), progress_bar("upload")
        )
        announce = catalog_entry(args, path) if args.catalog else None
    return await add_title(
        path,
        args.title,
        store,
        analysis_seconds=args.analysis_seconds,
        progress=progress,
        announce=announce,
    )


async def _preposition(args: argparse.Namespace, admin_key: str) -> list[str]:
    """Push the plan to every edge; one line per edge saying what it filled."""
    redis, store = redis_client(args.redis_url), open_store(args.store)
    try:
        titles = await plan(redis, store, args.top)
    finally:
        await redis.aclose()
        await store.close()
    paths = [path for title_paths in titles.values() for path in title_paths]
    if not paths:
        return ["no published title in the forecast: nothing to push"]
    lines = []
    async with aiohttp.ClientSession() as http:
        for edge in args.edge:
            pushed = await push(http, edge, admin_key, paths)
            lines.append(f"{edge}: {pushed.filled}/{len(paths)} objects of {', '.join(titles)}")
    return lines


def preposition(args: argparse.Namespace) -> int:
    admin_key = os.environ.get(ADMIN_KEY_ENV)
    if not admin_key or not args.redis_url:
        print(f"livemesh vod: preposition needs REDIS_URL and {ADMIN_KEY_ENV}", file=sys.stderr)
        return 1
    try:
        lines = asyncio.run(_preposition(args, admin_key))
    except (aiohttp.ClientError, ObjectStoreError) as error:
        print(f"livemesh vod: pre-positioning failed: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh vod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="publish a video file as a title")
    add.add_argument("file")
    add.add_argument("--title", required=True, help="title id (lowercase, digits, - and _)")
    add.add_argument(
        "--store",
        default=os.environ.get("LIVEMESH_VOD_STORE", DEFAULT_STORE),
        help="object store: a directory or s3://bucket/prefix[?endpoint=URL] "
        "(env LIVEMESH_VOD_STORE; default %(default)s)",
    )
    add.add_argument(
        "--catalog",
        default=os.environ.get("LIVEMESH_CATALOG"),
        help="the catalog service (host:port) to add the title to (env LIVEMESH_CATALOG); "
        "none: the media is stored but no catalog entry is made",
    )
    add.add_argument("--display-title", help="the title viewers see (default: the id)")
    add.add_argument(
        "--from-store", action="store_true", help="FILE is an object's name in the store"
    )
    add.add_argument(
        "--progress",
        choices=("bar", "json"),
        default="bar",
        help="bars on stderr, or JSON lines on stdout for a program (command/vod_json.py)",
    )
    add.add_argument(
        "--handshake",
        action="store_true",
        help="with --progress json: once stored, publish only if stdin says 'publish'",
    )
    add.add_argument(
        "--analysis-seconds",
        type=float,
        default=ANALYSIS_SECONDS,
        help="how much of the file the per-title analysis trial-encodes",
    )
    pre = sub.add_parser("preposition", help="push the forecast's titles into edges' caches")
    pre.add_argument("--edge", action="append", required=True, help="an edge's URL; repeat it")
    pre.add_argument("--top", type=int, default=10, help="how many titles (default %(default)s)")
    pre.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="the view history")
    pre.add_argument(
        "--store",
        default=os.environ.get("LIVEMESH_VOD_STORE", DEFAULT_STORE),
        help="object store of the titles (env LIVEMESH_VOD_STORE; default %(default)s)",
    )
    add_event_commands(sub)
    args = parser.parse_args(argv)
    if args.action == "preposition":
        return preposition(args)
    if args.action in ("archive", "publish-event"):
        return event_command(args)
    as_json = args.progress == "json"
    if args.handshake:  # a service's background work: its RPCs come first on the CPU
        os.nice(vod_json.BACKGROUND_NICE)
    rungs = run_or_report(_add(args), as_json)
    if rungs is None:
        return 1
    if as_json:
        vod_json.emit(published=args.title, ladder=describe(rungs))
    else:
        print(f"published {args.title}: {describe(rungs)}")
    return 0


def run_or_report(work: Coroutine[Any, Any, T], as_json: bool = False) -> T | None:
    """What ``work`` returns, or None once the reason it failed is on stderr in one line
    (``as_json``: on stdout as a JSON line, :func:`command.vod_json.failed`)."""
    try:
        return asyncio.run(work)
    except (
        BadMedia,
        TitleError,
        ObjectStoreError,
        credentials.MissingKey,
        av.FFmpegError,
    ) as error:
        if as_json:
            vod_json.failed(error)
        else:
            print(f"livemesh vod: {error}", file=sys.stderr)
    except grpc.aio.AioRpcError as error:
        print(f"livemesh vod: the catalog refused the title: {error.details()}", file=sys.stderr)
    return None


def add_event_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``archive CHANNEL`` and ``publish-event CHANNEL --epoch ID``: live events as titles."""
    archive = sub.add_parser("archive", help="archive a channel's events, each a title once over")
    publish = sub.add_parser("publish-event", help="publish an archived event as a title now")
    publish.add_argument("--epoch", required=True, help="the event's epoch id (its URLs' path)")
    for command in (archive, publish):
        command.add_argument("channel")
        command.add_argument(
            "--store",
            default=os.environ.get("LIVEMESH_VOD_STORE", DEFAULT_STORE),
            help="object store (env LIVEMESH_VOD_STORE; default %(default)s)",
        )
        command.add_argument(
            "--catalog",
            default=os.environ.get("LIVEMESH_CATALOG"),
            help="the catalog service (host:port) to add each title to (env LIVEMESH_CATALOG)",
        )
    archive.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="the channel")


def event_command(args: argparse.Namespace) -> int:
    if args.action == "archive":
        if not args.redis_url:
            print("livemesh vod: archive needs REDIS_URL", file=sys.stderr)
            return 1
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        asyncio.run(_archive(args))
        return 0
    published = run_or_report(_publish_event(args))
    if published is None:
        return 1
    print(f"published {published.title}: {published.seconds:g} s from segment {published.first}")
    return 0
