"""Press play on an on-demand title: dash.js in headless Chromium, through an edge.

The title is published by ``livemesh vod add`` from a 45-second lavfi clip (bars and a
tone at 192x108) into a store directory; an origin process serves that store and an edge
process (with URL tokens) serves the origin.  The page gets the manifest URL the playback
service hands out for a title: ``/t/{token}/vod/{title}/manifest.mpd`` on the edge, signed
for ``/vod/{title}/``.  The page is served from another port: every request is cross-origin.

Everything waits on events the page reports (``playing``, ``currentTime``) through
``page.wait_for_function``; the timeouts are only upper bounds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kernel.objectstore import LocalStore
from kernel.ports import free_port
from kernel.processes import stop_processes
from kernel.redis_server import EmbeddedRedis, redis_client
from kernel.supervise import TOKEN_KEYS_ENV, wait_ready
from kernel.tokens import TokenSigner, new_keys, tokenized
from live.archive import Archiver
from live.archive_title import EventTitle
from live.state import ChannelStore
from player.harness import ROOT, chromium_page, missing_setup, page_url, serve_player
from tests.live_helpers import running_channel, small_config, wait_for_segments

pytestmark = pytest.mark.timeout(240)

TITLE = "bars"
CLIP_SECONDS = 45
SEEK_TO_S = 12.0
PLAY_AFTER_SEEK_S = 30.0
STATE = "() => ({state: window.livemesh.state, stalls: window.livemesh.stalls()})"


def bars_with_tone(path: Path) -> Path:
    """``CLIP_SECONDS`` of ``testsrc2`` with a tone, lossless (FFV1 + FLAC)."""
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=192x108:rate=25", "-f", "lavfi", "-i", "sine"]
    subprocess.run(
        ["ffmpeg", "-v", "error", *lavfi, "-t", str(CLIP_SECONDS), "-c:v", "ffv1",
         "-c:a", "flac", str(path)],
        check=True,
    )  # fmt: skip
    return path


@dataclass
class VodStack:
    """An origin serving a store and an edge in front of it, as processes on loopback."""

    origin: str
    edge: str
    logs: Path
    token_keys: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def signed_mpd(self, title: str, session: str = "browser") -> str:
        """What StartPlayback returns for a title: its MPD on the edge, under a token."""
        token = TokenSigner.from_spec(self.token_keys).sign(f"/vod/{title}/", session, 3600)
        return self.edge + tokenized(token, f"/vod/{title}/manifest.mpd")

    def dead(self) -> list[str]:
        return [name for name, proc in self.processes.items() if proc.poll() is not None]

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
            for p in sorted(self.logs.glob("*.log"))
        )


@contextmanager
def vod_stack(store: Path) -> Iterator[VodStack]:
    """Redis (embedded), an origin serving ``store`` and an edge verifying URL tokens."""
    with ExitStack() as cleanup:
        redis_url = cleanup.enter_context(EmbeddedRedis()).url
        logs = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="livemesh-vod-")))
        origin_port, edge_port = free_port(), free_port()
        stack = VodStack(
            origin=f"http://127.0.0.1:{origin_port}",
            edge=f"http://127.0.0.1:{edge_port}",
            logs=logs,
            token_keys=new_keys(),
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_KEYS_ENV: stack.token_keys}
        cleanup.callback(lambda: stop_processes(list(stack.processes.values()), 10.0))

        def start(name: str, args: list[str]) -> None:
            log = cleanup.enter_context((logs / f"{name}.log").open("wb"))
            stack.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "command.cli", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        start(
            "origin",
            ["origin", "--port", str(origin_port), "--redis-url", redis_url,
             "--vod-store", str(store)],
        )  # fmt: skip
        start(
            "edge",
            ["edge", "--name", "edge", "--host", "127.0.0.1", "--port", str(edge_port),
             "--tier", "edge", "--parent", stack.origin, "--log-level", "WARNING"],
        )  # fmt: skip
        stop = threading.Event()
        for url in (f"{stack.origin}/time", f"{stack.edge}/healthz"):
            if not wait_ready(url, stop, 30.0):
                raise RuntimeError(f"{url} did not answer\n{stack.log_tail()}")
        yield stack


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ``TITLE``, published by ``livemesh vod add``."""
    base = tmp_path_factory.mktemp("vod")
    clip = bars_with_tone(base / "bars.mkv")
    root = base / "store"
    done = subprocess.run(
        [sys.executable, "-m", "command.cli", "vod", "add", str(clip), "--title", TITLE,
         "--store", str(root), "--analysis-seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def test_dashjs_plays_a_title_from_press_play_seeks_and_plays_30_s_without_a_stall(
    store: Path,
) -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    with vod_stack(store) as stack, serve_player() as player, chromium_page() as (page, log):
        mpd = stack.signed_mpd(TITLE)

        def report() -> str:
            return f"{page.evaluate(STATE)}\n{log.text()}\ndead: {stack.dead()}\n{stack.log_tail()}"

        page.goto(page_url(player, mpd))
        try:
            page.wait_for_function("() => window.livemesh.state.playing", timeout=30_000)
            page.wait_for_function(
                "() => document.getElementById('video').currentTime > 1", timeout=20_000
            )
            page.evaluate(
                f"() => {{ document.getElementById('video').currentTime = {SEEK_TO_S}; }}"
            )
            # the seek is done once the element plays on from the new position
            page.wait_for_function(
                """t => { const v = document.getElementById('video');
                          return !v.seeking && !v.paused && v.readyState >= 3
                                 && v.currentTime >= t && v.currentTime < t + 2; }""",
                arg=SEEK_TO_S,
                timeout=20_000,
            )
            resumed: dict[str, Any] = page.evaluate(STATE)
            page.wait_for_function(
                "t => document.getElementById('video').currentTime >= t",
                arg=SEEK_TO_S + PLAY_AFTER_SEEK_S,
                timeout=int(PLAY_AFTER_SEEK_S * 1000 * 2),
            )
        except Exception as error:
            raise AssertionError(f"{error}\n{report()}") from error
        final: dict[str, Any] = page.evaluate(STATE)
        assert final["state"]["errors"] == [], report()
        # the page's seek, made early in the title, not the playhead arriving there by itself
        assert [s["to"] for s in final["state"]["seeks"] if s["from"] < 3] == [SEEK_TO_S], report()
        # no stall once the seek had resumed: the stalls then are all there are now
        assert final["stalls"] == resumed["stalls"], report()
        assert final["state"]["lowLatency"] is False, report()  # a static MPD: plain VOD
        assert not stack.dead(), report()
        media = (".mpd", ".m4s", ".mp4")
        stream = [url for url in log.requests if urlsplit(url).path.endswith(media)]
        assert stream and all(url.startswith(f"{stack.edge}/t/") for url in stream), stream
        segments = {urlsplit(url).path.rsplit("/", 1)[1] for url in stream if ".m4s" in url}
        assert segments and all(f"/vod/{TITLE}/" in url for url in stream), stream


EVENT_SEGMENTS = 12  # seconds of a live event, archived and published as a title


async def _archive_an_event(redis_url: str, root: Path) -> str:
    """A real channel on air for ``EVENT_SEGMENTS`` segments, archived into ``root``; the
    title the archiver published when it went off air."""
    redis = redis_client(redis_url)
    objects = LocalStore(root)
    config = small_config("event")
    live = ChannelStore(redis, config.name)
    published: asyncio.Queue[EventTitle] = asyncio.Queue()
    archiver = Archiver(live, objects, ended=published.put)
    following = asyncio.create_task(archiver.run())
    try:
        async with running_channel(live, config) as channel:
            assert channel.epoch is not None
            reps = [r.id for r in channel.epoch.representations]
            await wait_for_segments(live, channel.epoch.id, reps, EVENT_SEGMENTS)
        return (await asyncio.wait_for(published.get(), 60)).title
    finally:
        following.cancel()
        await redis.aclose()


def test_dashjs_plays_an_archived_live_event_to_its_end_without_a_stall(
    tmp_path: Path,
) -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    root = tmp_path / "store"
    with EmbeddedRedis() as redis_server:
        title = asyncio.run(_archive_an_event(redis_server.url, root))
    with vod_stack(root) as stack, serve_player() as player, chromium_page() as (page, log):

        def report() -> str:
            return f"{page.evaluate(STATE)}\n{log.text()}\ndead: {stack.dead()}\n{stack.log_tail()}"

        page.goto(page_url(player, stack.signed_mpd(title)))
        try:
            page.wait_for_function("() => window.livemesh.state.playing", timeout=30_000)
            started: dict[str, Any] = page.evaluate(STATE)
            # to the start of the event's last whole segment
            page.wait_for_function(
                "t => document.getElementById('video').currentTime >= t",
                arg=EVENT_SEGMENTS - 2,
                timeout=EVENT_SEGMENTS * 1000 * 3,
            )
        except Exception as error:
            raise AssertionError(f"{error}\n{report()}") from error
        final: dict[str, Any] = page.evaluate(STATE)
        assert final["state"]["errors"] == [], report()
        assert final["stalls"] == started["stalls"], report()
        assert final["state"]["lowLatency"] is False, report()  # static: played as VOD
        stream = [url for url in log.requests if urlsplit(url).path.endswith(".m4s")]
        assert stream and all("/t/" in url and f"/vod/{title}/" in url for url in stream)
