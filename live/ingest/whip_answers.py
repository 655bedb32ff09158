"""How the WHIP endpoint answers: CORS on every answer, a refusal's reason as text.

A WHIP client may run in a page, so every answer carries the CORS headers, and a
client's log should name why it was turned away, so a refusal's body is the reason.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kernel.http.cors import WHIP

SDP_MAX_BYTES = 64 * 1024

CORS_HEADERS = WHIP.all_headers()  # on every answer: the WHIP client may run in a page


def offer_refusal(code: int) -> type[web.HTTPException]:
    """The refusal for an offer :mod:`live.ingest.whip_offer` turned down (400 or 406)."""
    return web.HTTPNotAcceptable if code == 406 else web.HTTPBadRequest


def refusal(
    kind: Any, reason: str, retry_s: int | None = None, max_size: int | None = None
) -> web.HTTPException:
    """A refusal of ``kind`` carrying ``reason``, with what the client needs to retry."""
    headers = dict(CORS_HEADERS)
    if kind is web.HTTPUnauthorized:
        headers["WWW-Authenticate"] = 'Bearer realm="livemesh ingest"'
    if retry_s is not None:
        headers["Retry-After"] = str(retry_s)
    if max_size is not None:
        return web.HTTPRequestEntityTooLarge(
            max_size=SDP_MAX_BYTES, actual_size=SDP_MAX_BYTES + 1, text=reason, headers=headers
        )
    error: web.HTTPException = kind(text=reason, headers=headers)
    return error
