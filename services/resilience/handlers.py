"""Wrapping a server method handler's behaviour: the one helper every server
interceptor of the layer uses (unary-unary and unary-stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def wrap(
    handler: grpc.RpcMethodHandler | None,
    unary: Callable[[Unary], Unary] | None = None,
    stream: Callable[[Stream], Stream] | None = None,
) -> grpc.RpcMethodHandler | None:
    """``handler`` with its unary-unary behaviour passed through ``unary`` and its
    unary-stream behaviour through ``stream``; client-streaming handlers unchanged."""
    if handler is None or handler.request_streaming:
        return handler
    if handler.unary_unary is not None and unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))  # type: ignore[attr-defined]
    if handler.unary_stream is not None and stream is not None:
        return handler._replace(unary_stream=stream(handler.unary_stream))  # type: ignore[attr-defined]
    return handler


def method_of(details: grpc.HandlerCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)
