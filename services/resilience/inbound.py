"""Server interceptor that makes an inbound call's deadline and priority the
context of its handler, so every outbound call it makes inherits them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.resilience import context
from services.resilience.handlers import Stream, Unary, method_of, wrap
from services.resilience.policy import POLICIES, PolicyTable


class DeadlineServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, policies: PolicyTable = POLICIES) -> None:
        self.policies = policies

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        policy = self.policies.policy(method_of(handler_call_details))
        sent = context.priority_from(handler_call_details.invocation_metadata)
        prio = policy.priority if sent is None else min(sent, policy.priority)

        def unary(behaviour: Unary) -> Unary:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
                # a call that came without a deadline gets its method's default
                remaining = ctx.time_remaining()
                with context.inbound(policy.timeout_s if remaining is None else remaining, prio):
                    return await behaviour(request, ctx)

            return handle

        def stream(behaviour: Stream) -> Stream:
            async def handle(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with context.inbound(ctx.time_remaining(), prio):
                    async for item in behaviour(request, ctx):
                        yield item

            return handle

        return wrap(handler, unary, stream)  # type: ignore[return-value]
