"""How the gateway answers a failure: the HTTP code of a gRPC status, the JSON error body
(``{"error": {code, status, message, field, requestId, retryAfterMs}}``), and when a
refused caller may come back (``retryAfterMs`` and ``Retry-After``).

Apart from the app because the error body and its retry hint are part of the API (the
OpenAPI document's ``Error``), a promise to every player whatever route refused it.
"""

from __future__ import annotations

import math
import random
from typing import Any

import grpc
from aiohttp import web

from kernel.outage import RETRY_AFTER_S

HTTP_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
STATUS_OF_HTTP = {
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
}
RETRYABLE_HTTP = frozenset({429, 503})
# a refusal that came without a hint from the server: a full bulkhead (429) is worth
# another try soon, jittered x0.5 to x1.5 so the callers refused together do not return
# together; a service that is unavailable (its state store restarting, a failover) after
# kernel.outage's RETRY_AFTER_S, jittered down to half of it (Retry-After stays that)
DEFAULT_RETRY_S = 0.25


def retry_hint_s(status: int, pushback: float | None, rng: random.Random | None = None) -> float:
    """When a caller refused with ``status`` should try again (0: a retry will not help):
    the refusing server's ``pushback`` (seconds) when it sent one, else a jittered default."""
    if status not in RETRYABLE_HTTP or (pushback is not None and pushback < 0):
        return 0.0
    if pushback is not None:
        return pushback
    draw = (rng or random).random()
    if status == 503:
        return RETRY_AFTER_S * (1.0 - 0.5 * draw)  # (RETRY_AFTER_S / 2, RETRY_AFTER_S]
    return DEFAULT_RETRY_S * (0.5 + draw)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    field: str | None = None,
    retry_after_s: float = 0.0,
) -> web.Response:
    error: dict[str, Any] = {
        "code": status,
        "status": code,
        "message": message,
        "requestId": request_id,
    }
    if field:
        error["field"] = field
    headers = None
    if retry_after_s > 0:
        error["retryAfterMs"] = max(1, round(retry_after_s * 1000))
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return web.json_response({"error": error}, status=status, headers=headers)
