"""Server interceptor that makes an inbound call's deadline and priority the
context of its handler, so every outbound call it makes inherits them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from kernel.rpc.resilience import context
from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Stage, StreamStep, UnaryStep
from kernel.rpc.resilience.policy import POLICIES, PolicyTable


class DeadlineServerInterceptor(Stage):
    def __init__(self, policies: PolicyTable = POLICIES) -> None:
        super().__init__()
        self.policies = policies

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        policy = self.policies.policy(method)
        declared, default_s = policy.priority, policy.timeout_s

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            # a call that came without a deadline gets its method's default
            remaining = ctx.time_remaining()
            token = context.enter(
                default_s if remaining is None else remaining, call.priority(declared)
            )
            try:
                return await inner(request, ctx, call)
            finally:
                context.leave(token)

        return handle

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        declared = self.policies.policy(method).priority

        async def handle(
            request: Any,
            ctx: grpc.aio.ServicerContext,
            call: Inbound,
        ) -> AsyncIterator[Any]:
            with context.inbound(ctx.time_remaining(), call.priority(declared)):
                async for item in inner(request, ctx, call):
                    yield item

        return handle
