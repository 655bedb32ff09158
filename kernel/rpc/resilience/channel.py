"""A dependency as a ``grpc.aio.Channel``, so generated stubs take it unchanged.

Each method a stub asks for becomes a callable that sends the call through its
:class:`Dependency`; per connection to an instance it keeps the channel's own
multi-callable, made once.
"""

from __future__ import annotations

from typing import Any

from kernel.rpc.resilience.balancer import Connection
from kernel.rpc.resilience.dependency import Dependency


class _MultiCallable:
    """One method of a dependency, as a generated stub holds it: per connection, the
    channel's own multi-callable of ``kind``, made once (kept by the connection, so it
    goes when the connection does)."""

    def __init__(
        self, dependency: Dependency, method: str, kind: str, serializer: Any, deserializer: Any
    ) -> None:
        self.dependency = dependency
        self.call = dependency.method(method)
        self.kind = kind
        self.serializer = serializer
        self.deserializer = deserializer

    def on(self, connection: Connection) -> Any:
        callable_ = connection.callables.get(self)
        if callable_ is None:
            callable_ = connection.callables[self] = getattr(connection.channel, self.kind)(
                self.call.name,
                request_serializer=self.serializer,
                response_deserializer=self.deserializer,
            )
        return callable_


class _UnaryUnary(_MultiCallable):
    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        return self.dependency.unary(self.call, self.on, request, timeout, metadata)


class _Streaming(_MultiCallable):
    """Server- and client-streaming calls (the latter: reflection, none in livemesh's
    APIs): one instance, the propagated deadline, nothing else."""

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        return self.dependency.stream(self.call, self.on, request, timeout, metadata)


class ResilientChannel:
    """Stands for a ``grpc.aio.Channel`` in generated stubs (unary and server-streaming)."""

    def __init__(self, dependency: Dependency) -> None:
        self.dependency = dependency

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> _UnaryUnary:
        return _UnaryUnary(
            self.dependency, _name(method), "unary_unary", request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> _Streaming:
        return _Streaming(
            self.dependency,
            _name(method),
            "unary_stream",
            request_serializer,
            response_deserializer,
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> _Streaming:
        return _Streaming(
            self.dependency,
            _name(method),
            "stream_unary",
            request_serializer,
            response_deserializer,
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        **_: Any,
    ) -> _Streaming:
        return _Streaming(
            self.dependency,
            _name(method),
            "stream_stream",
            request_serializer,
            response_deserializer,
        )

    async def close(self, grace: float | None = None) -> None:
        await self.dependency.close()


def _name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method
