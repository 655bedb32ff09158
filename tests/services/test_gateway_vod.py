"""The console's VOD routes through the real gateway: an operator uploads a file (streamed into
the object store, up to the size limit) and publishes it, following the publication to its
title; a viewer is refused (403) and an anonymous caller asked who it is (401) before a
byte is stored; bad input is a 4xx naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kernel.objectstore import LocalStore
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.server import RunningServer, credential_verifier
from services.catalog.service import CatalogService
from services.gateway.app import Gateway, build_app
from services.gateway.uploads import Uploads
from tests.services.conftest import SignUp, Start
from tests.services.test_catalog_vod import tiny_clip
from tests.services.test_gateway import Stack, serve_http

MAX_BYTES = 200_000  # above the one-second clip, far below a real film


@pytest.fixture
async def vod(
    start: Start,
    factory: RpcChannelFactory,
    identity: RunningServer,
    verifier: TokenVerifier,
    tmp_path: Path,
) -> AsyncIterator[tuple[Stack, LocalStore]]:
    """Identity, a catalog publishing from a local store, and a gateway uploading into it."""
    objects = LocalStore(tmp_path / "objects")
    catalog = await start(CatalogService(vod_store=str(objects.root), viewers=verifier))
    targets = {"identity": identity.target, "catalog": catalog.target}
    uploads = Uploads(objects, MAX_BYTES, credential_verifier(), verifier)
    gateway = Gateway(factory, targets, verifier, rate=1000, burst=1000, uploads=uploads)
    server = await serve_http(build_app(gateway))
    async with aiohttp.ClientSession() as http:
        yield Stack(f"http://127.0.0.1:{server.port}", http, None), objects  # type: ignore[arg-type]
    await server.close()


def operator_token(operator_auth: tuple[tuple[str, str], ...]) -> str:
    return operator_auth[0][1].removeprefix("Bearer ")


async def followed(stack: Stack, name: str, token: str) -> list[dict[str, Any]]:
    """The publication as the console polls it, until it ends."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(90):
        while not seen or seen[-1]["stage"].rsplit("_", 1)[-1] not in ("DONE", "FAILED"):
            status, body = await stack.call("GET", f"/v1/{name}", token=token)
            assert status == 200, body
            seen.append(body["publication"])
            await asyncio.sleep(0.05)
    return seen


async def test_an_operator_uploads_and_publishes_a_clip(
    vod: tuple[Stack, LocalStore], operator_auth: tuple[tuple[str, str], ...], tmp_path: Path
) -> None:
    stack, objects = vod
    token = operator_token(operator_auth)
    clip = tiny_clip(tmp_path / "clip.mp4").read_bytes()
    status, stored = await stack.call("POST", "/v1/vodUploads", clip, token)
    assert status == 200, stored
    assert stored["sizeBytes"] == str(len(clip))
    assert await objects.get(stored["sourceObject"]) == clip
    request = {"titleId": "bars", "displayTitle": "Bars", "sourceObject": stored["sourceObject"]}
    status, started = await stack.call("POST", "/v1/vodPublications", request, token)
    assert status == 200, started
    done = (await followed(stack, started["publication"]["name"], token))[-1]
    assert done["stage"] == "VOD_PUBLICATION_STAGE_DONE", done
    assert done["fractionDone"] == 1 and done["title"]["name"] == "titles/bars"
    status, title = await stack.call("GET", "/v1/titles/bars")
    assert status == 200 and title["title"]["displayTitle"] == "Bars"
    # a clash is refused with the reason, the field named where a field is at fault
    status, again = await stack.call("POST", "/v1/vodPublications", request, token)
    assert status == 409 and "already exists" in again["error"]["message"]
    status, bad = await stack.call(
        "POST", "/v1/vodPublications", {**request, "titleId": "B"}, token
    )
    assert status == 400 and bad["error"]["field"] == "titleId", bad


async def test_uploads_are_for_operators_and_bounded(
    vod: tuple[Stack, LocalStore],
    operator_auth: tuple[tuple[str, str], ...],
    sign_up: SignUp,
) -> None:
    stack, objects = vod
    viewer = await sign_up("viewer@example.org")
    status, refused = await stack.call("POST", "/v1/vodUploads", b"x" * 100)
    assert status == 401, refused
    status, refused = await stack.call("POST", "/v1/vodUploads", b"x" * 100, "forged.token.here")
    assert status == 401, refused
    status, refused = await stack.call("POST", "/v1/vodUploads", b"x" * 100, viewer.token)
    assert status == 403 and "operator credential, not a viewer" in refused["error"]["message"]
    publish = {"titleId": "x", "displayTitle": "X", "sourceObject": "uploads/a/source"}
    status, _ = await stack.call("POST", "/v1/vodPublications", publish, viewer.token)
    assert status == 403
    status, _ = await stack.call("GET", "/v1/vodPublications/abc")
    assert status == 401

    token = operator_token(operator_auth)
    status, big = await stack.call("POST", "/v1/vodUploads", b"x" * (MAX_BYTES + 1), token)
    assert status == 413 and f"limit of {MAX_BYTES} bytes" in big["error"]["message"]

    # a body that does not say its length is counted as it comes, and cut at the limit
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BYTES // 10_000 + 1):
            yield b"y" * 10_000

    headers = {"Authorization": f"Bearer {token}"}
    async with stack.http.post(
        f"{stack.gateway}/v1/vodUploads", data=chunks(), headers=headers
    ) as response:
        assert response.status == 413, await response.text()
    status, empty = await stack.call("POST", "/v1/vodUploads", b"", token)
    assert status == 400 and empty["error"]["field"] == "body"
    assert await objects.names("uploads") == []
    status, missing = await stack.call("POST", "/v1/vodPublications", publish, token)
    assert status == 404 and "uploads/a/source" in missing["error"]["message"]
