"""Why the origin refuses a request, as typed errors mapped to HTTP in one place.

Handlers raise these instead of building error responses, so the status code of
"too early", "expired" or "bad input" is decided once (livesim2 ``errors.go``).
Every error answer is a short plain-text reason that no cache may keep: what is
missing at the live edge now may exist a moment later (:mod:`kernel.http.errors`).
"""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from kernel.http.errors import ERROR_CACHE_CONTROL, ERROR_CONTENT_TYPE, error_text
from kernel.http.hold import HOLD_EXPIRED, HOLD_HEADER
from kernel.outage import RETRY_AFTER_S


class OriginError(Exception):
    """A request the origin cannot answer with media; ``reason`` is told to the client."""

    status: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(OriginError):
    """The request names something that cannot exist (bad number, bad name)."""

    status = 400


class NotFound(OriginError):
    """No such channel, epoch, rendition or object."""

    status = 404


class TooEarly(OriginError):
    """Beyond the live edge: DESIGN.md §5 answers 404, with a max-age no longer than C."""

    status = 404


class Gone(OriginError):
    """Was there, has left the live window."""

    status = 410


class Unavailable(OriginError):
    """Should exist by now but the encoder has not produced it (stalled or stopped)."""

    status = 503


class HoldExpired(Unavailable):
    """A held request for the next segment saw no chunk in time.

    Marked so that caches in front (edge/upstream.py) pass it on instead of taking it
    for a failing parent and asking another one.
    """

    headers: ClassVar[dict[str, str]] = {HOLD_HEADER: HOLD_EXPIRED}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """The one shape of every error answer."""
    return web.Response(
        status=status,
        text=error_text(reason),
        content_type=ERROR_CONTENT_TYPE,
        headers={"Cache-Control": ERROR_CACHE_CONTROL, **(headers or {})},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn typed errors, and aiohttp's own (unknown route, wrong method), into answers."""
    try:
        return await handler(request)
    except OriginError as error:
        return error_response(error.status, error.reason, error.headers)
    except RedisError:  # the state store restarting or failing over: worth a retry soon
        return error_response(
            Unavailable.status,
            "manifest state unavailable",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = error_response(error.status, error.reason)
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
