"""The gateway serves the viewer app and the console as static files with a CSP, and its
channel admin routes forward the caller's bearer for the channels service to judge."""

from __future__ import annotations

import re

from services.gateway import webapp
from tests.services import test_gateway
from tests.services.test_gateway import Stack

stack = test_gateway.stack  # the running stack of test_gateway, for these tests too


async def _get(stack: Stack, path: str) -> tuple[int, dict[str, str], str]:
    async with stack.http.get(stack.gateway + path) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_pages_and_their_files_come_with_types_cache_rules_and_a_csp(stack: Stack) -> None:
    for page in ("/", "/console"):
        status, headers, html = await _get(stack, page)
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-cache"
        # every script and style is the gateway's own: no third-party origin
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith(("/", "#", "data:")), url
            if url.startswith("/web/"):
                status, headers, _ = await _get(stack, url)
                assert status == 200, url
                assert headers["Content-Type"].startswith(("text/javascript", "text/css"))
    assert set(webapp.VENDOR) <= {
        url.removeprefix("/vendor/")
        for url in re.findall(r'src="([^"]+)"', (await _get(stack, "/"))[2])
    }


async def test_only_the_apps_own_files_are_served(stack: Stack) -> None:
    for path in ("/web/..%2Fwebapp.py", "/web/nope.js", "/web/app.py", "/vendor/react.js"):
        status, headers, _ = await _get(stack, path)
        assert status == 404 and headers["Content-Type"].startswith("application/json"), path


async def test_channel_admin_takes_an_operator_and_refuses_a_viewer(
    stack: Stack, operator_auth: tuple[tuple[str, str], ...]
) -> None:
    operator = operator_auth[0][1].removeprefix("Bearer ")
    channel = {"channelId": "late-show", "channel": {"displayName": "The Late Show"}}
    status, _ = await stack.call("POST", "/v1/channels", channel)
    assert status == 401
    _, up = await stack.call(
        "POST", "/v1/accounts:signUp", {"email": "v@example.org", "password": "long enough"}
    )
    status, refused = await stack.call("POST", "/v1/channels", channel, up["accessToken"])
    assert status in (401, 403), refused

    status, bad = await stack.call("POST", "/v1/channels", {"channelId": "Bad Id!"}, operator)
    assert status == 400 and bad["error"]["field"] == "channelId", bad
    status, made = await stack.call("POST", "/v1/channels", channel, operator)
    assert status == 200 and made["streamKey"], made
    status, rotated = await stack.call(
        "POST", "/v1/channels/late-show:rotateStreamKey", {}, operator
    )
    assert status == 200 and rotated["streamKey"] not in ("", made["streamKey"])
    status, _ = await stack.call("POST", "/v1/channels/late-show:end", {}, operator)
    assert status == 200
