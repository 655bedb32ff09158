"""The gateway end to end: every service a real gRPC server on loopback, real Redis, the real
origin and a real edge node; the player's journey from sign-up to bytes from the edge."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import NodeConfig
from edge.node import EdgeNode
from edge.upstream import UpstreamConfig
from kernel import tokens
from kernel.epoch import Epoch, Representation
from kernel.objectstore import LocalStore
from kernel.outage import RETRY_AFTER_S
from kernel.ratelimit import TokenBuckets
from kernel.rpc.auth import TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.server import credential_verifier
from live.origin import build_app as build_origin
from live.state import ChannelStore
from services.catalog.service import CatalogService
from services.channels.service import ChannelService
from services.experiments.service import ExperimentService
from services.gateway.app import Gateway, build_app
from services.gateway.errors import DEFAULT_RETRY_S, error_response, retry_hint_s
from services.gateway.openapi import document
from services.gateway.routes import ROUTES, STUBS
from services.gateway.uploads import Uploads
from services.identity.service import IdentityService
from services.playback.service import PlaybackService, PlaybackServicer
from services.profile.service import ProfileService
from services.recommend.service import RecommendationService
from services.registry.service import RegistryService
from services.search.service import SearchService
from tests.services.conftest import Start

KEYS = tokens.new_keys()
SIGNER = tokens.TokenSigner.from_spec(KEYS)


@dataclass
class Stack:
    gateway: str  # base URL
    http: aiohttp.ClientSession
    state: aioredis.Redis

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = (
            body if isinstance(body, str | bytes) else (None if body is None else json.dumps(body))
        )
        async with self.http.request(method, self.gateway + path, data=data, headers=sent) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else {})


async def serve_http(app: aiohttp.web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def stack(
    start: Start,
    factory: RpcChannelFactory,
    redis_url: str,
    database_url: str,
    redis: aioredis.Redis,
    node_env: Callable[[str], None],
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    identity = await start(IdentityService(database_url))
    from kernel.rpc.auth import identity_key_loader

    verifier = TokenVerifier(identity_key_loader(factory, identity.target))
    catalog = await start(CatalogService())
    search = await start(SearchService(factory, catalog.target))
    profile = await start(ProfileService(redis_url, verifier))
    recommend = await start(RecommendationService(redis_url, verifier, factory, profile.target))
    channels = await start(ChannelService(redis_url, database_url))
    registry = await start(RegistryService())
    experiments = await start(ExperimentService(redis_url, database_url, viewers=verifier))
    origin = await serve_http(build_origin(redis))
    origin_url = f"http://127.0.0.1:{origin.port}"
    playback = await start(
        PlaybackService(
            PlaybackServicer(
                redis_url,
                verifier,
                factory,
                catalog=catalog.target,
                channels=channels.target,
                registry=registry.target,
                signer=SIGNER,
                origin_url=origin_url,
            )
        )
    )
    node_env("edge-eu")
    edge = EdgeNode(
        NodeConfig(
            name="edge-eu",
            upstream=UpstreamConfig(parents=(origin_url,)),
            registry=registry.target,
            region="eu-west",
            token_keys=KEYS,
        )
    )
    await edge.start("127.0.0.1", 0)
    assert edge.membership is not None
    async with asyncio.timeout(10):
        await edge.membership.registered.wait()
    targets = {
        "identity": identity.target,
        "catalog": catalog.target,
        "search": search.target,
        "profile": profile.target,
        "recommend": recommend.target,
        "playback": playback.target,
        "channels": channels.target,
        "experiments": experiments.target,
    }
    uploads = Uploads(LocalStore(tmp_path / "objects"), 1 << 20, credential_verifier(), verifier)
    gateway = await serve_http(
        build_app(Gateway(factory, targets, verifier, rate=1000, burst=1000, uploads=uploads))
    )
    async with aiohttp.ClientSession() as http:
        yield Stack(f"http://127.0.0.1:{gateway.port}", http, redis)
    await gateway.close()
    await edge.close()
    await origin.close()


async def put_demo_on_air(state: aioredis.Redis) -> None:
    """What the packager does when the demo channel starts: an epoch, init, first chunk."""
    store = ChannelStore(state, "demo")
    epoch = Epoch(
        "e1",
        int(time.time() * 1000) - 10_000,
        (Representation("v360", "video", "avc1.64001e", 600_000, 15360, 640, 360, 30),),
    )
    await store.start_epoch(epoch, {"v360": b"\x00\x00\x00\x08ftyp"}, window_s=60)
    await store.publish_chunk(epoch, "v360", 4, 0, b"\x00\x00\x00\x08moof", False, 60)


async def test_sign_up_search_recommend_and_press_play_on_the_demo_channel(stack: Stack) -> None:
    status, up = await stack.call(
        "POST",
        "/v1/accounts:signUp",
        {
            "email": "viewer@example.org",
            "password": "correct horse battery",
            "displayName": "Viewer",
        },
    )
    assert status == 200 and up["account"]["email"] == "viewer@example.org"
    status, signed = await stack.call(
        "POST",
        "/v1/accounts:signIn",
        {"email": "viewer@example.org", "password": "correct horse battery"},
    )
    assert status == 200
    token = signed["accessToken"]

    status, found = await stack.call("GET", "/v1/search?q=demo%20li")
    assert status == 200 and found["results"][0]["title"] == "titles/demo"
    status, title = await stack.call("GET", "/v1/titles/demo")
    assert title["title"]["liveChannel"] == "channels/demo"
    status, batch = await stack.call(
        "GET", "/v1/titles:batchGet?names=titles/nope&names=titles/demo&names=titles/gone"
    )
    assert status == 200 and [t["name"] for t in batch["titles"]] == ["titles/demo"]
    assert batch["missing"] == ["titles/nope", "titles/gone"]

    status, created = await stack.call(
        "POST",
        "/v1/profiles",
        {"profileId": "main", "profile": {"displayName": "Main"}},
        token=token,
    )
    assert status == 200, created
    status, recs = await stack.call("GET", "/v1/profiles/main/recommendations", token=token)
    assert status == 200 and recs["fallback"] is True and recs["recommendations"]

    await put_demo_on_air(stack.state)
    status, channel = await stack.call("GET", "/v1/channels/demo")
    assert channel["channel"]["state"] == "CHANNEL_STATE_LIVE"
    status, started = await stack.call(
        "POST",
        "/v1/playback:start",
        {
            "content": "titles/demo",
            "clientRegion": "eu-west",
            "profile": created["profile"]["name"],
        },
        token=token,
        headers={"X-Request-Id": "press-1"},
    )
    assert status == 200, started
    session = started["session"]
    best = session["manifestUrls"][0]
    assert best["instance"] == "instances/edge-eu"

    # the edge accepts the signed URL and serves the origin's manifest
    async with stack.http.get(best["url"]) as resp:
        assert resp.status == 200
        assert "<MPD" in await resp.text()
    prefix, rest = best["url"].split("/t/", 1)
    token_part, path = rest.split("/", 1)
    kid, expires, p64, s64, mac = token_part.split(".")
    tampered = ".".join((kid, str(int(expires) + 3600), p64, s64, mac))
    async with stack.http.get(f"{prefix}/t/{tampered}/{path}") as resp:
        assert resp.status == 403
    expired = SIGNER.sign("/live/demo/", "s", 1, now_s=time.time() - 60)
    async with stack.http.get(f"{prefix}/t/{expired}/{path}") as resp:
        assert resp.status == 403

    status, beat = await stack.call(
        "POST",
        f"/v1/playback/{session['name'].split('/')[1]}:heartbeat",
        {"positionMs": "1000"},
        token=token,
    )
    assert status == 200 and beat["session"]["positionMs"] == "1000"
    status, again = await stack.call(
        "POST",
        "/v1/playback:start",
        {"content": "titles/demo"},
        token=token,
        headers={"X-Request-Id": "press-1"},
    )
    assert again["session"]["name"] == session["name"]  # the request id made it idempotent


async def test_errors_map_to_http_with_json_bodies(stack: Stack) -> None:
    status, body = await stack.call("POST", "/v1/accounts:signUp", {"email": "nope"})
    assert status == 400 and body["error"]["field"] == "email"
    assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["requestId"]
    status, body = await stack.call("POST", "/v1/accounts:signUp", "{not json")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = await stack.call("POST", "/v1/accounts:signUp", {"emial": "x"})
    assert status == 400 and body["error"]["field"] == "emial"
    status, body = await stack.call("GET", "/v1/titles?pageSize=lots")
    assert status == 400 and body["error"]["field"] == "pageSize"
    status, body = await stack.call("GET", "/v1/titles/nope")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    status, body = await stack.call("GET", "/v1/titles:batchGet")
    assert status == 400 and body["error"]["field"] == "names"
    status, body = await stack.call("GET", "/v1/titles:batchGet?names=demo")
    assert status == 400 and body["error"]["field"] == "names[0]"
    status, body = await stack.call(
        "POST", "/v1/accounts:signIn", {"email": "who@example.org", "password": "whatever1"}
    )
    assert status == 401
    status, body = await stack.call("GET", "/v1/profiles")
    assert status == 401 and "bearer" in body["error"]["message"]
    status, body = await stack.call("GET", "/v1/profiles", token="forged.token.here")
    assert status == 401

    _, ada = await stack.call(
        "POST",
        "/v1/accounts:signUp",
        {"email": "ada@example.org", "password": "correct horse battery", "displayName": "Ada"},
    )
    status, body = await stack.call(
        "POST", "/v1/playback:start", {"content": "titles/premiere-night"}, token=ada["accessToken"]
    )
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    status, body = await stack.call(
        "POST",
        "/v1/playback:start",
        {"content": "channels/demo", "profile": "accounts/other/profiles/p"},
        token=ada["accessToken"],
    )
    assert status == 403
    status, body = await stack.call("GET", "/v1/nowhere")
    assert status == 404 and body["error"]["code"] == 404
    status, body = await stack.call("DELETE", "/v1/titles/demo")
    assert status == 405


async def test_request_ids_cors_and_preflight(stack: Stack) -> None:
    async with stack.http.get(
        stack.gateway + "/v1/titles/demo", headers={"X-Request-Id": "abc-123"}
    ) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with stack.http.get(
        stack.gateway + "/v1/titles/demo", headers={"X-Request-Id": "bad id!"}
    ) as resp:
        assert resp.headers["X-Request-Id"] != "bad id!" and len(resp.headers["X-Request-Id"])
    async with stack.http.options(
        stack.gateway + "/v1/playback:start",
        headers={
            "Origin": "http://player.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    ) as resp:
        assert resp.status == 204
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]


def test_token_buckets_limit_each_client_alone() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another client is not affected
    now[0] = 1.0  # two tokens back
    assert buckets.take("a") == 0.0


async def test_rate_limit_answers_429_with_retry_after(
    factory: RpcChannelFactory, verifier: TokenVerifier
) -> None:
    server = await serve_http(build_app(Gateway(factory, {}, verifier, rate=0.5, burst=2)))
    try:
        async with aiohttp.ClientSession() as http:
            codes = []
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{server.port}/healthz") as resp:
                    codes.append(resp.status)
                    retry_after = resp.headers.get("Retry-After")
                    body = await resp.json()
            assert codes == [200, 200, 429]
            assert retry_after == "2" and body["error"]["status"] == "RESOURCE_EXHAUSTED"
            # the documented hint, to the millisecond: the bucket's own wait (just under 2 s)
            assert 1900 <= body["error"]["retryAfterMs"] <= 2000
    finally:
        await server.close()


def test_a_refusal_worth_retrying_says_when_in_milliseconds_and_whole_seconds() -> None:
    # a shedding service's pushback passes through as it was jittered there
    assert retry_hint_s(429, 0.35) == 0.35
    assert retry_hint_s(503, -1.0) == 0.0  # the service said: do not retry
    assert retry_hint_s(400, 0.35) == 0.0  # a retry will not help a bad request
    hints = {retry_hint_s(429, None) for _ in range(20)}  # none sent: a jittered default
    assert len(hints) > 1
    assert all(0.5 * DEFAULT_RETRY_S <= h <= 1.5 * DEFAULT_RETRY_S for h in hints)
    # a service unavailable: kernel.outage's wait, jittered below it (the header keeps it)
    unavailable = {retry_hint_s(503, None) for _ in range(20)}
    assert len(unavailable) > 1
    assert all(RETRY_AFTER_S / 2 < h <= RETRY_AFTER_S for h in unavailable)
    answer = error_response(503, "UNAVAILABLE", "down", "r0", retry_after_s=max(unavailable))
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_S)
    answer = error_response(429, "RESOURCE_EXHAUSTED", "overloaded", "r1", retry_after_s=0.35)
    assert answer.headers["Retry-After"] == "1"  # whole seconds, rounded up (RFC 9110)
    assert json.loads(answer.body)["error"]["retryAfterMs"] == 350  # type: ignore[arg-type]
    plain = error_response(400, "INVALID_ARGUMENT", "bad", "r2")
    assert "Retry-After" not in plain.headers
    assert "retryAfterMs" not in json.loads(plain.body)["error"]  # type: ignore[arg-type]
    error = document()["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["properties"]["retryAfterMs"]["type"] == "integer"  # part of the API


def test_openapi_documents_exactly_the_served_routes(
    factory: RpcChannelFactory, verifier: TokenVerifier
) -> None:
    app = build_app(Gateway(factory, {}, verifier))
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method not in ("OPTIONS", "HEAD") and r.resource
    }
    doc = document()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    assert doc["openapi"].startswith("3.")
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and "200" in op["responses"], path
    for route in ROUTES:  # every $ref resolves
        op = doc["paths"][route.path][route.method.lower()]
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


async def test_readiness_names_the_services_that_are_not_serving(
    stack: Stack, factory: RpcChannelFactory, verifier: TokenVerifier
) -> None:
    status, body = await stack.call("GET", "/readyz")
    assert (
        status == 200
        and body["ready"]
        and set(body["services"]) == set(STUBS)  # every service a route calls
    )
    lonely = await serve_http(build_app(Gateway(factory, {"catalog": "127.0.0.1:1"}, verifier)))
    try:
        async with stack.http.get(f"http://127.0.0.1:{lonely.port}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["services"] == {"catalog": "UNAVAILABLE"}
    finally:
        await lonely.close()


async def test_openapi_is_served(stack: Stack) -> None:
    status, doc = await stack.call("GET", "/openapi.json")
    assert status == 200 and doc == json.loads(json.dumps(document()))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "email",
        "password",
        "displayName",
        "content",
        "profile",
        "profileId",
        "clientRegion",
        "maxUrls",
        "positionMs",
        "state",
        "view",
        "updateMask",
        "requestId",
        "query",
    ]
)
BODIES = st.dictionaries(FIELDS, JSON, max_size=5) | JSON


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES), body=BODIES, var=st.text(max_size=30), with_token=st.booleans()
)
async def test_random_input_never_yields_a_server_error(
    stack: Stack, route: Any, body: Any, var: str, with_token: bool
) -> None:
    path = route.path
    for name in route.path_fields:
        path = path.replace("{" + name + "}", aiohttp.helpers.quote(var, safe="") or "x")
    token = ""
    if with_token:
        status, made = await stack.call(
            "POST",
            "/v1/accounts:signIn",
            {"email": "fuzz@example.org", "password": "correct horse battery"},
        )
        if status == 401:
            _, made = await stack.call(
                "POST",
                "/v1/accounts:signUp",
                {
                    "email": "fuzz@example.org",
                    "password": "correct horse battery",
                    "displayName": "Fuzz",
                },
            )
        token = made["accessToken"]
    status, answer = await stack.call(route.method, path, body if route.body else None, token=token)
    assert status < 500, (route.path, body, answer)
    if status >= 400:
        assert answer["error"]["message"] and answer["error"]["requestId"]
