"""A title from file to viewer: per-title analysis, packaging, the store, origin and edge.

Sources are one-second lavfi clips at 192x108 written losslessly (FFV1), so the
real encoders, the DASH muxer and the XPSNR filter all run, but in well under a second.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import av
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from lxml import etree
from yarl import URL

from kernel.objectstore import LocalStore, ObjectStore
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import serve
from kernel.tokens import TokenSigner, tokenized
from live.origin import build_app
from live.vod.analysis import CRFS, BadMedia, analyse, read_clip
from live.vod.hull import select_rungs, upper_hull
from live.vod.publish import Progressions, TitleExists, add_title, record_object
from livemesh.catalog.v1 import catalog_pb2 as pb
from livemesh.catalog.v1 import catalog_pb2_grpc as pb_grpc
from services.catalog.service import CatalogService
from tests.objectstore_helpers import moto_endpoint, s3_store
from tests.test_edge_integration import KEYS, ROOT, Node
from tests.test_mpd import dash_schema  # noqa: F401 (a fixture)

MPD_NS = "{urn:mpeg:dash:schema:mpd:2011}"


def lavfi_clip(path: Path, source: str, frames: int = 25) -> Path:
    """``frames`` frames of a lavfi source, 192x108 at 25 fps, lossless."""
    sep = ":" if "=" in source else "="
    with (
        av.open(f"{source}{sep}size=192x108:rate=25", format="lavfi") as inp,
        av.open(str(path), "w") as out,
    ):
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 192, 108, "yuv420p"
        for index, frame in enumerate(inp.decode(video=0)):
            if index >= frames:
                break
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("clips")
    return {
        "simple": lavfi_clip(base / "simple.mkv", "color=c=0x336699"),
        "complex": lavfi_clip(base / "complex.mkv", "mandelbrot"),
        "bars": bars_with_tone(base / "bars.mkv"),
    }


def bars_with_tone(path: Path) -> Path:
    """Three seconds of ``testsrc2`` with a 44.1 kHz mono tone, lossless (FFV1 + FLAC)."""
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=192x108:rate=25", "-f", "lavfi", "-i", "sine"]
    subprocess.run(
        ["ffmpeg", "-v", "error", *lavfi, "-t", "3", "-c:v", "ffv1", "-c:a", "flac", str(path)],
        check=True,
    )
    return path


def test_a_simple_source_gets_a_cheaper_ladder_than_a_complex_one(clips: dict[str, Path]) -> None:
    probes = {kind: analyse(read_clip(str(clips[kind]), 1.0)) for kind in ("simple", "complex")}
    ladders = {kind: select_rungs(upper_hull(p), min_kbps=1) for kind, p in probes.items()}
    # the complex clip falls short of good-enough quality on the grid: it is probed further
    assert min(p.crf for p in probes["complex"]) < min(CRFS) == min(p.crf for p in probes["simple"])
    simple, complex_ = ladders["simple"], ladders["complex"]
    assert simple and complex_
    assert simple[-1].kbps * 3 < complex_[-1].kbps
    assert sum(r.kbps for r in simple) * 3 < sum(r.kbps for r in complex_)
    assert simple[-1].quality >= complex_[-1].quality


@pytest.mark.parametrize("kind", ["text", "truncated", "truncated-faststart", "audio-only"])
async def test_bad_input_is_refused_and_publishes_nothing(
    kind: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mkv"
    if kind == "text":
        bad.write_text("not a video\n")
    elif kind.startswith("truncated"):
        # moov at the end: the cut loses the index; at the front: the file decodes, but short
        front = ["-movflags", "+faststart"] if kind.endswith("faststart") else []
        mp4 = tmp_path / "whole.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-i",
                str(clips["bars"]),
                "-c:v",
                "libx264",
                *front,
                str(mp4),
            ],
            check=True,
        )
        bad.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    else:
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(bad)], check=True
        )
    store = LocalStore(tmp_path / "store")
    with pytest.raises(BadMedia) as refused:
        await add_title(str(bad), "bad", store, analysis_seconds=1)
    reason = str(refused.value)  # one line that names the file
    assert reason.startswith(str(bad)) and "\n" not in reason
    assert await store.names("vod") == []


class FailingStore(LocalStore):
    """Refuses the ``fail_at``-th put, as a store that goes away mid-upload would."""

    def __init__(self, root: Path, fail_at: int) -> None:
        super().__init__(root)
        self.puts, self.fail_at = 0, fail_at

    async def put(self, name: str, body: bytes) -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            raise OSError("store went away")
        await super().put(name, body)


async def test_a_failed_upload_leaves_no_half_title(clips: dict[str, Path], tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "store", fail_at=3)
    with pytest.raises(OSError, match="went away"):
        await add_title(str(clips["bars"]), "half", store, analysis_seconds=1)
    assert store.puts >= 3
    assert await store.names("vod") == []


@pytest.fixture(scope="module")
def published(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding title ``bars``, added through the ``livemesh vod`` command."""
    root = tmp_path_factory.mktemp("store")
    add = [sys.executable, "-m", "command.cli", "vod", "add", str(clips["bars"]), "--title", "bars"]
    done = subprocess.run(
        [*add, "--store", str(root), "--analysis-seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "published bars" in done.stdout and "encode" in done.stderr
    again = subprocess.run(
        [*add, "--store", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1 and "already published" in again.stderr
    return root


@pytest.fixture
async def origin_url(redis: aioredis.Redis, published: Path) -> AsyncIterator[str]:
    store: ObjectStore = LocalStore(published)
    runner = web.AppRunner(build_app(redis, vod_store=store), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def edge(origin_url: str) -> AsyncIterator[Node]:
    node = await Node("vod-edge", "--parent", origin_url).start()
    yield node
    await node.stop()


def signed(path: str) -> str:
    return tokenized(TokenSigner.from_spec(KEYS).sign("/vod/bars/", "viewer", 60), path)


@pytest.fixture
def store_root(published: Path) -> Iterator[Path]:
    yield published / "vod" / "bars"


async def test_a_published_title_plays_through_an_edge(edge: Node, store_root: Path) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(edge.url + signed("/vod/bars/manifest.mpd")) as r:
            assert r.status == 200
            assert "immutable" in r.headers["Cache-Control"]
            mpd = etree.fromstring(await r.read())
        assert mpd.get("type") == "static"
        sets = {s.get("contentType"): s for s in mpd.iter(f"{MPD_NS}AdaptationSet")}
        assert len(sets["video"].findall(f"{MPD_NS}Representation")) >= 2
        assert sets["audio"].find(f"{MPD_NS}Representation").get("codecs") == "mp4a.40.2"
        for rep in mpd.iter(f"{MPD_NS}Representation"):
            template = rep.find(f"{MPD_NS}SegmentTemplate")
            assert template is not None
            init = template.get("initialization", "").replace("$RepresentationID$", rep.get("id"))
            media = template.get("media", "").replace("$RepresentationID$", rep.get("id"))
            first = media.replace("$Number$", template.get("startNumber", "1"))
            for name in (init, first):
                async with http.get(edge.url + signed(f"/vod/bars/{name}")) as r:
                    assert r.status == 200, name
                    assert await r.read() == (store_root / name).read_bytes()
        whole = (store_root / first).read_bytes()
        headers = {"Range": "bytes=100-199"}
        async with http.get(edge.url + signed(f"/vod/bars/{first}"), headers=headers) as r:
            assert r.status == 206
            assert await r.read() == whole[100:200]
        async with http.get(edge.url + "/vod/bars/manifest.mpd") as r:
            assert r.status == 403  # unsigned


async def test_the_origin_refuses_unknown_titles_and_odd_names(origin_url: str) -> None:
    cases = {
        "/vod/nope/manifest.mpd": 404,
        "/vod/bars/nope.m4s": 404,
        "/vod/bars/..%2Fbars%2Fmanifest.mpd": 400,
        "/vod/bars/%2e%2e": 400,
        "/vod/..%2Fvod/manifest.mpd": 400,
        "/vod/bars/manifest.txt": 400,
        "/vod/Bad!/manifest.mpd": 400,
    }
    async with aiohttp.ClientSession() as http:
        for path, status in cases.items():
            async with http.get(URL(origin_url + path, encoded=True)) as r:
                assert r.status == status, path
                assert "immutable" not in r.headers.get("Cache-Control", "")
        async with http.get(
            origin_url + "/vod/bars/manifest.mpd", headers={"Range": "bytes=999999-"}
        ) as r:
            assert r.status == 416
        async with http.get(
            origin_url + "/vod/bars/manifest.mpd", headers={"Range": "bytes=-5"}
        ) as r:
            assert r.status == 206 and (await r.read()).endswith(b">\n")


def test_the_published_mpd_validates_against_the_dash_schema(
    store_root: Path,
    dash_schema: etree.XMLSchema,  # noqa: F811 (the fixture imported above)
) -> None:
    tree = etree.parse(str(store_root / "manifest.mpd"))
    assert dash_schema.validate(tree), dash_schema.error_log


async def test_a_title_published_to_s3_is_served_from_it(
    clips: dict[str, Path], redis: aioredis.Redis
) -> None:
    """Publish to S3 (moto's server mode, a stand-in for S3) and play from the origin."""
    with moto_endpoint() as endpoint:
        store = s3_store(endpoint)
        rungs = await add_title(str(clips["simple"]), "plain", store, analysis_seconds=1)
        assert rungs
        names = await store.names("vod/plain")
        assert "vod/plain/manifest.mpd" in names and len(names) >= 3
        runner = web.AppRunner(build_app(redis, vod_store=store), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/vod/plain/"
        try:
            async with aiohttp.ClientSession() as http:
                for name in names:
                    leaf = name.rsplit("/", 1)[1]
                    async with http.get(url + leaf, headers={"Range": "bytes=0-"}) as r:
                        assert r.status == 206
                        assert await r.read() == await store.get(name)
        finally:
            await runner.cleanup()
            await store.close()


async def vod_add(*args: str) -> tuple[int, str]:
    """``livemesh vod add`` as a process (the test's loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "command.cli",
        "vod",
        "add",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_vod_add_puts_the_title_in_the_catalog_or_publishes_nothing(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    service = CatalogService()
    running = await serve(service)
    factory = RpcChannelFactory()
    root = tmp_path / "store"
    common = ["--store", str(root), "--analysis-seconds", "1", "--catalog", running.target]
    try:
        status, output = await vod_add(
            str(clips["simple"]), "--title", "plain", "--display-title", "Plain", *common
        )
        assert status == 0, output
        stub = factory.stub(pb_grpc.CatalogServiceStub, running.target)
        title = (await stub.GetTitle(pb.GetTitleRequest(name="titles/plain"))).title
        assert (title.display_title, title.kind, title.duration_seconds) == (
            "Plain",
            pb.TITLE_KIND_MOVIE,
            1,
        )
        assert (root / "vod" / "plain" / "manifest.mpd").is_file()
        # a seeded title's name is taken: the catalog refuses, the upload is taken back
        status, output = await vod_add(str(clips["simple"]), "--title", "orbital-decay", *common)
        assert status == 1 and "refused" in output
        assert await LocalStore(root).names("vod/orbital-decay") == []
    finally:
        await factory.close()
        await running.stop(0)
        await service.close()


def test_a_long_title_is_sampled_across_its_length(clips: dict[str, Path]) -> None:
    """Three seconds analysed on a one-second budget: three windows, one in each second."""
    clip = read_clip(str(clips["bars"]), 1.0, windows=3)
    times = [frame.time for frame in clip.frames]
    assert len(times) == 24
    assert [int(t) for t in times] == [0] * 8 + [1] * 8 + [2] * 8
    assert all(0.3 <= t % 1 <= 0.7 for t in times if t is not None)
    assert len(read_clip(str(clips["bars"]), 5.0).frames) == 75


async def test_a_failed_publication_can_be_retried_under_the_same_id(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    store = FailingStore(tmp_path / "store", fail_at=2)
    with pytest.raises(OSError, match="went away"):
        await add_title(str(clips["simple"]), "again", store, analysis_seconds=1)
    # a killed attempt cannot take its objects back: one is left, with other bytes
    # than the next encode makes, and no manifest
    await store.put("vod/again/init-0.mp4", b"left by a killed upload")
    assert await add_title(str(clips["simple"]), "again", store, analysis_seconds=1)
    names = await store.names("vod/again")
    assert "vod/again/manifest.mpd" in names
    assert await store.get("vod/again/init-0.mp4") != b"left by a killed upload"


async def test_an_archive_begun_during_the_encode_is_not_cleared(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """An event's archive that appears under the id while the title is being analysed (the
    first check passed) is refused before anything is cleared or uploaded."""
    root = tmp_path / "store"
    store = LocalStore(root)
    record = root / record_object("late")

    def archive_begins(done: int, total: int) -> None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_bytes(b"{}")  # as the archiver's first put would

    with pytest.raises(TitleExists, match="already exists: title 'late' is a live event"):
        await add_title(
            str(clips["simple"]), "late", store, analysis_seconds=1,
            progress=Progressions(analysis=archive_begins),
        )  # fmt: skip
    assert await store.names("vod") == [record_object("late")]
