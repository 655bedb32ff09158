"""How the client half reads a call's outcome, and the errors it raises without a call.

A dependency's health, a retry and a fallback each depend on the status code, and not
alike: a shed call is retried and falls back but is no failure of the dependency.  The
layer's own refusals (no time left, no instance, bulkhead full) are shaped as the
errors a call raises, so callers handle one kind.
"""

from __future__ import annotations

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# what counts against a dependency's health (not the caller's own mistakes).  A shed call
# (RESOURCE_EXHAUSTED) is not: the server is healthy and protecting itself, and counting
# it would open the breaker and turn a brief overload into a total outage.
FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)
FALLBACK_ON = FAILURES | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def local_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """An error the layer raises without a call, shaped as the one a call raises."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
