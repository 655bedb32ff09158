"""The console's VOD uploads panel in Debian's Chromium, against a real catalog and gateway on
loopback (the panel needs no more of the stack, so the test starts in a second, not a
demo's minute): an operator signs in, an empty file is refused beside the file field with
the gateway's reason, a taken title id at the form's foot with the catalog's; then a
two-second 160x90 lavfi clip goes up, its progress bar runs through the publication's
stages to 100 % and the title is listed. No page logs an error but those two refusals.

The services run on an asyncio loop in a thread of their own, as Playwright's sync API
holds the test's thread. Every wait is on what the page shows; timeouts are upper bounds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.objectstore import LocalStore
from kernel.rpc import credentials
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.process import serve
from kernel.rpc.server import credential_verifier
from player.harness import chromium_page, missing_setup
from services.catalog.service import CatalogService
from services.gateway.app import Gateway, build_app
from services.gateway.uploads import Uploads
from tests.services.test_catalog_vod import tiny_clip
from tests.stack_helpers import ROOT

pytestmark = pytest.mark.timeout(120)

IMG = ROOT / "docs" / "img"
T = TypeVar("T")
# the refusals the test asks for: an empty file (400), a taken title id (409)
REFUSED_ON_PURPOSE = (
    "the server responded with a status of 400",
    "the server responded with a status of 409",
)
WATCH_STAGES = """() => {
  const stage = document.getElementById('vod-stage');
  window.vodStages = [];
  new MutationObserver(() => window.vodStages.push(stage.textContent))
    .observe(stage, { childList: true, characterData: true, subtree: true });
}"""


class Background:
    """An event loop in a thread: the services' home while the browser holds the test's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def catalog_and_gateway(objects: Path) -> Iterator[str]:
    """A catalog publishing from the store at ``objects`` and a gateway uploading into it;
    the gateway's URL."""
    background = Background()
    catalog = CatalogService(vod_store=str(objects))

    async def start() -> tuple[Any, web.AppRunner, RpcChannelFactory]:
        running = await serve(catalog)
        factory = RpcChannelFactory()
        viewers = TokenVerifier(None)  # the console's callers here are operators only
        uploads = Uploads(LocalStore(objects), 10 << 20, credential_verifier(), viewers)
        gateway = Gateway(factory, {"catalog": running.target}, viewers, 1000, 1000, "*", uploads)
        runner = web.AppRunner(build_app(gateway))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return running, runner, factory

    running, runner, factory = background.run(start())

    async def stop() -> None:
        await runner.cleanup()
        await factory.close()
        await running.stop(0)
        await catalog.close()

    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        background.run(stop())
        background.stop()


def test_an_operator_uploads_a_clip_and_sees_it_published(
    tmp_path: Path, credential_key: Ed25519PrivateKey
) -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    clip = tiny_clip(tmp_path / "bars.mp4", seconds=2)
    operator = credentials.mint(credential_key, "operator", "console-test")
    with catalog_and_gateway(tmp_path / "objects") as gateway, chromium_page() as (page, log):
        page.goto(gateway + "console#/vod")
        page.get_by_label("Operator token").fill(operator)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Video file").set_input_files(
            {"name": "empty.mp4", "mimeType": "video/mp4", "buffer": b""}
        )
        page.get_by_label("Title id").fill("orbital-decay")  # a seeded title
        page.get_by_label("Display title").fill("Bars and tone")
        page.get_by_role("button", name="Upload and publish").click()
        page.locator("#vod-file-error").filter(has_text="the upload is empty").wait_for()
        assert page.get_by_label("Video file").get_attribute("aria-invalid") == "true"

        page.get_by_label("Video file").set_input_files(clip)
        page.get_by_role("button", name="Upload and publish").click()
        refused = page.locator("#vod-form .form-error").filter(has_text="already exists")
        refused.wait_for(timeout=30_000)

        page.get_by_label("Title id").fill("bars-and-tone")
        page.evaluate(WATCH_STAGES)
        page.get_by_role("button", name="Upload and publish").click()
        listed = page.get_by_role("list", name="Published titles")
        listed.get_by_role("link", name="Bars and tone").wait_for(timeout=60_000)
        assert page.locator("#vod-percent").inner_text() == "100 %"
        assert page.locator("#vod-progress").evaluate("e => e.value") == 1
        stages = page.evaluate("() => window.vodStages")
        working = {"Choosing the ladder (per-title analysis)", "Encoding and packaging"}
        assert stages[-1] == "Published" and working & set(stages), stages
        page.screenshot(path=IMG / "console-vod.png", full_page=True)
        errors = [line for line in log.console if line.startswith(("error:", "pageerror:"))]
        for refusal in REFUSED_ON_PURPOSE:
            assert len([line for line in errors if refusal in line]) == 1, errors
        assert len(errors) == len(REFUSED_ON_PURPOSE), errors
