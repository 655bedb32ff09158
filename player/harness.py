"""The Python side of the browser player: a live stack, the page's server, headless Chromium.

Used by ``tests/test_browser_playback.py`` and ``bench/latency.py``:

* :func:`live_stack` starts a private Redis, the origin, a live channel, a shield on the
  origin and an edge (with tokens) on the shield, each as its own ``livemesh`` process,
  and hands out signed manifest URLs on the edge.
* :func:`serve_player` serves ``player/`` (``index.html``, ``player.js`` and dash.js, Shaka
  and hls.js from ``player/node_modules``) on its own port: a different origin from the edge, so the
  player's every request is a cross-origin one, as on a real site.
* :func:`chromium_page` opens a page in Debian's Chromium, driven by Playwright, and
  records the browser console and failed requests for the failure message.

Set-up (``make browser-deps``): ``apt-get install chromium``, ``npm ci`` in ``player/``,
and the ``playwright`` package from the dev extras.  Playwright's own browser download
does not work here, so Chromium is always the system one at :data:`CHROMIUM`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.channel_config import ChannelConfig

from kernel.cmcd import CmcdStats, parse_query, split_query

PLAYER_DIR = Path(__file__).resolve().parent
ROOT = PLAYER_DIR.parent
MODULES = PLAYER_DIR / "node_modules"
DASHJS = MODULES / "dashjs" / "dist" / "modern" / "umd" / "dash.all.min.js"
# Every player the page can run (its ?player=), by the script index.html loads for it.
PLAYERS = {
    "dashjs": DASHJS,
    "shaka": MODULES / "shaka-player" / "dist" / "shaka-player.compiled.js",
    "hlsjs": MODULES / "hls.js" / "dist" / "hls.min.js",
}
CHROMIUM = "/usr/bin/chromium"
# Headless on a machine with no GPU and a closed network (background networking and
# component updates would only fail), and media that may start without a user gesture.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
]
READY_TIMEOUT_S = 30.0
MPD_NAME = "manifest.mpd"


def missing_setup() -> list[str]:
    """What ``make browser-deps`` has not installed yet (empty when all is there)."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    for script in PLAYERS.values():
        if not script.exists():
            missing.append(f"{script.relative_to(ROOT)} (npm ci in player/)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    return missing


def page_url(player_url: str, src: str, **params: object) -> str:
    """The player page for the manifest ``src``; ``params`` (player, liveDelay, maxDrift,
    log, sid: the playback session id its CMCD carries) go in the query."""
    query = {"src": src, **{k: str(v) for k, v in params.items() if v is not None}}
    return f"{player_url}?{urllib.parse.urlencode(query)}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_player(host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``player/`` on a free port; yields the page's URL."""
    handler = partial(_QuietHandler, directory=str(PLAYER_DIR))
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="player-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- the live stack ------------------------------------------------------------------------


@dataclass
class LiveStack:
    """A running origin, channel, shield and edge; URLs on loopback."""

    channel: str
    origin: str
    shield: str
    edge: str
    logs: Path
    token_keys: str  # the URL-token keys the edge verifies with (made for the run)
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)  # each process's livemesh args
    start: Callable[[str, list[str]], None] | None = field(default=None, repr=False)

    def crash_and_restart(self, name: str) -> None:
        """SIGKILL process ``name`` (a crash) and start it again with the same command, as
        the supervisor restarts a process marked ``restart``."""
        assert self.start is not None
        proc = self.processes[name]
        proc.kill()
        proc.wait()
        self.start(name, self.commands[name])

    def signed_mpd(self, ttl_s: int = 3600, session: str = "browser") -> str:
        """The channel's MPD on the edge, under a token covering ``/live/{channel}/``."""
        return self.signed(MPD_NAME, ttl_s, session)

    def signed_playlist(self, ttl_s: int = 3600, session: str = "browser") -> str:
        """The channel's LL-HLS multivariant playlist on the edge, under a token."""
        from live.hls import MULTIVARIANT_NAME

        return self.signed(MULTIVARIANT_NAME, ttl_s, session)

    def signed(self, name: str, ttl_s: int, session: str) -> str:
        from kernel.tokens import TokenSigner

        signer = TokenSigner.from_spec(self.token_keys)
        token = signer.sign(f"/live/{self.channel}/", session, ttl_s)
        return f"{self.edge}/t/{token}/live/{self.channel}/{name}"

    @property
    def origin_mpd(self) -> str:
        return f"{self.origin}/live/{self.channel}/manifest.mpd"

    def dead(self) -> list[str]:
        return [name for name, proc in self.processes.items() if proc.poll() is not None]

    def log_tail(self, lines: int = 20) -> str:
        """The last lines each process wrote, for a failure message."""
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _drain(stream: IO[str]) -> None:
    for _line in stream:
        pass


def _start_node(
    stack: LiveStack, name: str, args: list[str], log: IO[str], env: dict[str, str]
) -> str:
    """A ``livemesh edge`` process; returns its URL once it prints ``READY name url``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "command.cli", "edge", "--name", name, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    stack.processes[name] = proc
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the node's readiness signal; EOF if it died
    if not line.startswith("READY "):
        raise RuntimeError(f"{name} did not start: {line!r}\n{stack.log_tail()}")
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    return line.split()[-1]


@contextmanager
def live_stack(
    channel: str = "browser",
    *,
    redis_url: str | None = None,
    config: ChannelConfig | None = None,
    pipelines: Sequence[str] = (),
) -> Iterator[LiveStack]:
    """Redis (embedded unless given), origin, channel ``channel``, shield and edge.

    The MPD's UTCTiming names the edge's own ``/time`` (``origin --time-url``): a player
    syncs its clock with the node it streams from, never with the origin. ``config``: the
    channel's settings (the default ladder unless given; its name is ``channel``).
    ``pipelines``: run the channel as these redundant pipelines (processes
    ``pipeline-NAME``, :mod:`live.pipelines`) instead of one packager.
    """
    from kernel.channel_config import ChannelConfig
    from kernel.channel_config_store import create_channel_config
    from kernel.ports import free_port
    from kernel.redis_server import EmbeddedRedis
    from kernel.supervise import TOKEN_KEYS_ENV, wait_ready
    from kernel.tokens import new_keys

    with ExitStack() as cleanup:
        if redis_url is None:
            redis_url = cleanup.enter_context(EmbeddedRedis()).url
        logs = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="livemesh-player-")))
        origin_port, edge_port = free_port(), free_port()
        stack = LiveStack(
            channel=channel,
            origin=f"http://127.0.0.1:{origin_port}",
            shield="",
            edge=f"http://127.0.0.1:{edge_port}",
            logs=logs,
            token_keys=new_keys(),
        )

        def stop_all() -> None:
            for proc in reversed(stack.processes.values()):
                if proc.poll() is None:
                    proc.terminate()
            for proc in reversed(stack.processes.values()):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        cleanup.callback(stop_all)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_KEYS_ENV: stack.token_keys}
        cli = [sys.executable, "-m", "command.cli"]

        def start(name: str, args: list[str]) -> None:
            log = cleanup.enter_context((logs / f"{name}.log").open("a"))  # a restart appends
            stack.commands[name] = args
            stack.processes[name] = subprocess.Popen(
                [*cli, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
            )

        stack.start = start

        start(
            "origin",
            [
                "origin",
                "--port",
                str(origin_port),
                "--redis-url",
                redis_url,
                "--time-url",
                f"{stack.edge}/time",
            ],
        )
        stop = threading.Event()
        if not wait_ready(f"{stack.origin}/time", stop, READY_TIMEOUT_S):
            raise RuntimeError(f"the origin did not start\n{stack.log_tail()}")
        # as the channels service would
        create_channel_config(redis_url, config or ChannelConfig(channel))
        if not pipelines:
            start("channel", ["channel", channel, "--redis-url", redis_url])
        for name in pipelines:
            start(
                f"pipeline-{name}",
                ["channel", channel, "--pipeline", name, "--redis-url", redis_url],
            )
        # The channel gives no readiness signal: its MPD answers once its first epoch exists.
        if not wait_ready(stack.origin_mpd, stop, READY_TIMEOUT_S):
            raise RuntimeError(f"the channel did not go on air\n{stack.log_tail()}")
        quiet = ["--log-level", "WARNING"]
        shield_log = cleanup.enter_context((logs / "shield.log").open("w"))
        stack.shield = _start_node(
            stack,
            "shield",
            ["--host", "127.0.0.1", "--port", "0", "--tier", "shield", "--no-tokens",
             "--parent", stack.origin, *quiet],
            shield_log,
            env,
        )  # fmt: skip
        edge_log = cleanup.enter_context((logs / "edge.log").open("w"))
        url = _start_node(
            stack,
            "edge",
            ["--host", "127.0.0.1", "--port", str(edge_port), "--tier", "edge",
             "--parent", stack.shield, "--fallback", stack.origin, *quiet],
            edge_log,
            env,
        )  # fmt: skip
        assert url == stack.edge, (url, stack.edge)
        yield stack


# -- the browser ---------------------------------------------------------------------------


@dataclass
class BrowserLog:
    """What the page said and what it failed to fetch, for failure messages."""

    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def cmcd_sids(self) -> set[object]:
        """The CMCD ``sid`` of each media segment request the page made (None: a request
        without CMCD, or without a sid)."""
        raw = [
            split_query(url.encode())[1]
            for url in self.requests
            if urllib.parse.urlsplit(url).path.endswith(".m4s")
        ]
        return {parse_query(r, CmcdStats()).get("sid") if r else None for r in raw}

    def note_response(self, response: Any) -> None:
        if response.status >= 400:
            self.bad_responses.append(f"{response.status} {response.url}")

    def text(self, last: int = 30) -> str:
        parts = [
            "console:\n  " + "\n  ".join(self.console[-last:]),
            "failed requests:\n  " + "\n  ".join(self.failed_requests[-last:]),
            "HTTP errors:\n  " + "\n  ".join(self.bad_responses[-last:]),
        ]
        return "\n".join(parts)


@contextmanager
def chromium_page() -> Iterator[tuple[Any, BrowserLog]]:
    """A fresh headless Chromium page (Playwright's sync API) and the log it keeps."""
    from playwright.sync_api import sync_playwright

    log = BrowserLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: log.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.console.append(f"pageerror: {e}"))
            page.on("request", lambda r: log.requests.append(r.url))
            page.on(
                "requestfailed",
                lambda r: log.failed_requests.append(f"{r.method} {r.url}: {r.failure}"),
            )
            page.on("response", log.note_response)
            yield page, log
        finally:
            browser.close()
