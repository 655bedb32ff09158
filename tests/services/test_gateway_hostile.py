"""Hostile request bodies at the gateway: each answered with a 4xx naming its reason (never
a 5xx), and the gateway serving ordinary requests as before; the README's first steps, sent
as curl sends them."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest

from services.gateway.body import MAX_BODY_BYTES, MAX_DEPTH, nesting_within
from services.gateway.routes import ROUTES
from tests.services import test_gateway
from tests.services.test_gateway import Stack, put_demo_on_air

stack = test_gateway.stack  # the running stack of test_gateway, for these tests too

PASSWORD = "a long passphrase"
JSON = {"Content-Type": "application/json"}
CURL = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "*/*"}  # curl -d


def deep(levels: int) -> str:
    return '{"email":' + "[" * levels + "]" * levels + "}"


# (name, body, extra headers, expected status, words the error message must contain)
HOSTILE: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("5,000 levels deep", deep(5000), {}, 400, f"deeper than {MAX_DEPTH} levels"),
    ("5,000 unclosed", "[" * 5000, {}, 400, f"deeper than {MAX_DEPTH} levels"),
    ("deep inside a string is no depth", '{"email": "' + "[" * 5000 + '"}', {}, 400, "email"),
    ("oversized", json.dumps({"email": "x" * MAX_BODY_BYTES}), {}, 413, str(MAX_BODY_BYTES)),
    ("wrong type: number", {"email": 5}, {}, 400, "email: must be a string"),
    ("wrong type: list", {"password": ["x"]}, {}, 400, "password: must be a string"),
    ("wrong type: object", {"email": {"a": 1}}, {}, 400, "email: must be a string"),
    ("unknown field", {"emial": "me@example.org"}, {}, 400, "emial: unknown field"),
    ("not JSON", "{not json", {}, 400, "body: is not JSON"),
    ("NaN is not JSON", '{"email": NaN}', {}, 400, "body: is not JSON"),
    ("not UTF-8", b'{"email": "\xff"}', JSON, 400, "body: is not UTF-8"),
    ("an array", "[]", {}, 400, "body: must be a JSON object"),
    ("null", "null", {}, 400, "body: must be a JSON object"),
    ("XML", "<signUp/>", {"Content-Type": "application/xml"}, 415, "application/xml"),
    ("multipart", "--x--", {"Content-Type": "multipart/form-data; boundary=x"}, 415, "multipart"),
    ("huge string", {"email": "x" * 60_000 + "@example.org"}, {}, 400, "email"),
]
SIGN_UP_HOSTILE = (
    ("long name", {"email": "a@b.org", "password": PASSWORD, "displayName": "x" * 60_000}),
    ("blank name", {"email": "a@b.org", "password": PASSWORD, "displayName": " "}),
)
PLAYBACK_HOSTILE: list[tuple[str, Any, int, str]] = [
    ("wrong type", {"maxUrls": "many"}, 400, "maxUrls: must be a 32-bit integer"),
    ("wrong type: bool", {"content": True}, 400, "content: must be a string"),
    ("huge string", {"content": "titles/" + "x" * 60_000}, 400, "content"),
    ("5,000 levels deep", '{"content":' + "[" * 5000 + "}", 400, "deeper than"),
    # refused by the service, named as the caller sent it
    ("bad region", {"content": "titles/demo", "clientRegion": "Eu West!"}, 400, "clientRegion: "),
]


async def sign_in(stack: Stack) -> str:
    status, signed = await stack.call(
        "POST", "/v1/accounts:signIn", {"email": "me@example.org", "password": PASSWORD}
    )
    assert status == 200, signed
    return str(signed["accessToken"])


def assert_refused(status: int, answer: dict[str, Any], expected: int, words: str) -> None:
    assert status == expected, (status, answer)
    error = answer["error"]
    assert error["code"] == expected and error["requestId"] and error["status"]
    assert words in error["message"], error


async def test_readme_first_steps_work_verbatim(stack: Stack) -> None:
    """The README's three curls: sign up with only an email and a password, sign in, play."""
    await put_demo_on_air(stack.state)
    body = '{"email":"me@example.org","password":"a long passphrase"}'
    status, up = await stack.call("POST", "/v1/accounts:signUp", body, headers=CURL)
    assert status == 200, up
    assert up["account"]["displayName"] == "me"  # the email's local part
    status, signed = await stack.call("POST", "/v1/accounts:signIn", body, headers=CURL)
    assert status == 200 and signed["accessToken"]
    status, started = await stack.call(
        "POST",
        "/v1/playback:start",
        '{"content":"titles/demo"}',
        token=signed["accessToken"],
        headers=CURL,
    )
    assert status == 200 and started["session"]["manifestUrls"], started


@pytest.mark.parametrize("path", ["/v1/accounts:signUp", "/v1/accounts:signIn"])
async def test_hostile_bodies_are_refused_with_a_reason(stack: Stack, path: str) -> None:
    _, up = await stack.call(
        "POST", "/v1/accounts:signUp", {"email": "me@example.org", "password": PASSWORD}
    )
    assert up["account"]["email"] == "me@example.org"
    for name, body, headers, expected, words in HOSTILE:
        status, answer = await stack.call("POST", path, body, headers=headers)
        assert_refused(status, answer, expected, words), name
    if path.endswith("signUp"):
        for name, body in SIGN_UP_HOSTILE:
            status, answer = await stack.call("POST", path, body)
            assert_refused(status, answer, 400, "displayName: "), name
            assert answer["error"]["field"] == "displayName"
    assert await sign_in(stack)  # and the gateway carries on


async def test_hostile_press_play_is_refused_and_play_goes_on(stack: Stack) -> None:
    await put_demo_on_air(stack.state)
    await stack.call(
        "POST", "/v1/accounts:signUp", {"email": "me@example.org", "password": PASSWORD}
    )
    token = await sign_in(stack)
    for name, body, expected, words in PLAYBACK_HOSTILE:
        status, answer = await stack.call("POST", "/v1/playback:start", body, token=token)
        assert_refused(status, answer, expected, words), name
    status, started = await stack.call(
        "POST", "/v1/playback:start", {"content": "titles/demo"}, token=token
    )
    assert status == 200, started


async def test_oversized_chunked_and_inflated_bodies_are_refused_while_others_are_served(
    stack: Stack,
) -> None:
    """No Content-Length to refuse up front (chunked), or a small one that inflates (gzip):
    the read stops past the limit."""

    async def chunks() -> Any:
        for _ in range(4 * MAX_BODY_BYTES // 1024):
            yield b"[" * 1024

    async def oversized() -> tuple[int, dict[str, Any]]:
        async with stack.http.post(
            stack.gateway + "/v1/accounts:signIn",
            data=chunks(),
            headers={"Content-Type": "application/json"},
        ) as resp:
            return resp.status, await resp.json()

    async def ordinary() -> int:
        status, _ = await stack.call("GET", "/v1/titles/demo")
        return status

    async def bomb() -> tuple[int, dict[str, Any]]:  # 16 KiB on the wire, 16 MiB inflated
        data = gzip.compress(b" " * (256 * MAX_BODY_BYTES))
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        async with stack.http.post(
            stack.gateway + "/v1/accounts:signIn", data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    results = await asyncio.gather(oversized(), bomb(), *(ordinary() for _ in range(5)))
    for status, answer in results[:2]:
        assert_refused(status, answer, 413, f"larger than {MAX_BODY_BYTES} bytes")
    assert results[2:] == [200] * 5


def test_a_field_a_service_names_is_the_callers_name() -> None:
    by_path = {route.path: route for route in ROUTES if route.method != "GET"}
    assert by_path["/v1/playback:start"].caller_field("client_region") == "clientRegion"
    assert by_path["/v1/profiles/{profile}"].caller_field("profile.display_name") == (
        "profile.displayName"
    )
    assert by_path["/v1/profiles/{profile}"].caller_field("profile.name") == "profile"
    listing = next(r for r in ROUTES if r.path == "/v1/titles")
    assert listing.caller_field("page_size") == "pageSize"
    assert listing.caller_field("no.such") == "no.such"


def test_nesting_is_measured_outside_strings() -> None:
    assert nesting_within(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, MAX_DEPTH)
    assert not nesting_within(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), MAX_DEPTH)
    assert not nesting_within(b"{" * 5000, MAX_DEPTH)  # unclosed counts too
    assert nesting_within(b'{"a": "' + b"[" * 5000 + b'"}', MAX_DEPTH)
    assert nesting_within(b"[" + b'"\\"[[[[", ' * 40 + b"1]", MAX_DEPTH)  # escaped quotes
    assert nesting_within(b"[[], {}]" * 1000, MAX_DEPTH)  # many brackets, shallow
    assert not nesting_within(b'"a" ' + b"[" * 40, MAX_DEPTH)
    assert nesting_within(b'"unterminated ' + b"[" * 40, MAX_DEPTH)  # the parser stops first


async def test_text_plain_json_is_still_read(stack: Stack) -> None:
    """Clients that send JSON as text (aiohttp's and fetch's default for a string) work."""
    async with stack.http.post(
        stack.gateway + "/v1/accounts:signUp",
        data=json.dumps({"email": "txt@example.org", "password": PASSWORD}),
    ) as resp:
        assert resp.status == 200, await resp.text()
