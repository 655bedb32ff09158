"""Who may call each method: declared beside the method, enforced by the server scaffold.

A servicer marks every RPC with one of the decorators below; the scaffold refuses to
mount a service with a method that declares nothing, so a new method cannot be
forgotten. Before the handler runs, :class:`AccessStage` checks the call's
``authorization: Bearer`` credential:

- :func:`public`: anyone; the declaration says why.
- :func:`viewer`: a viewer's access token from identity. The handler still checks
  that the resource it names is the caller's (it knows the resource's owner).
- :func:`operator`: an operator credential.
- :func:`internal`: a service or operator credential (service-to-service calls).
- :func:`viewer_or_internal`: either (a viewer for itself, a service for any viewer).
- :func:`node`: a node credential, for the node the request speaks for only (or an
  operator's).

No credential, or one that does not verify, is UNAUTHENTICATED; a valid one of
another role, or a node speaking for another node, is PERMISSION_DENIED. Operator,
node and service credentials are verified with the configured credential key
(:mod:`kernel.rpc.credentials`); viewer tokens with identity's keys, by the verifier
the service hands its :class:`~kernel.rpc.server.ServiceSpec`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from kernel.rpc.auth import (
    NODE,
    OPERATOR,
    SERVICE,
    VIEWER,
    Principal,
    TokenVerifier,
    bearer_token,
)
from kernel.rpc.credentials import subject
from kernel.rpc.errors import PermissionDenied, ServiceError, Unauthenticated
from kernel.rpc.resilience.context import Inbound
from kernel.rpc.resilience.handlers import Stage, StreamStep, UnaryStep

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__livemesh_access__"


@dataclass(frozen=True)
class Access:
    """A method's declaration: the roles that may call it (none: public) and, for node
    methods, which node the request speaks for."""

    roles: frozenset[str]
    why: str = ""
    speaks_for: Callable[[Any], str] | None = None

    @property
    def public(self) -> bool:
        return not self.roles


def _declare(access: Access) -> Callable[[F], F]:
    def mark(method: F) -> F:
        setattr(method, ATTRIBUTE, access)
        return method

    return mark


def public(why: str) -> Callable[[F], F]:
    """Anyone may call; ``why`` is required, so every open door says why it is open."""
    if not why:
        raise ValueError("a public method says why it is public")
    return _declare(Access(frozenset(), why))


def viewer(method: F) -> F:
    """A viewer's access token (the handler checks the resource is the viewer's)."""
    return _declare(Access(frozenset({VIEWER})))(method)


def operator(method: F) -> F:
    """An operator credential."""
    return _declare(Access(frozenset({OPERATOR})))(method)


def internal(why: str) -> Callable[[F], F]:
    """A service's (or an operator's) credential: a call one part of the stack makes to
    another, which viewers and nodes have no business making."""
    return _declare(Access(frozenset({SERVICE, OPERATOR}), why))


def viewer_or_internal(why: str) -> Callable[[F], F]:
    """A viewer's access token (the handler checks the resource is the viewer's), or a
    service's or operator's credential (a part of the stack acting for any viewer)."""
    return _declare(Access(frozenset({VIEWER, SERVICE, OPERATOR}), why))


def node(speaks_for: Callable[[Any], str]) -> Callable[[F], F]:
    """A node credential whose subject is the node ``speaks_for(request)`` names, or an
    operator's (who manages the fleet: registers a node by hand, removes one gone rogue)."""
    return _declare(Access(frozenset({NODE, OPERATOR}), speaks_for=speaks_for))


def declared(servicer: object, method: str) -> Access | None:
    """The declaration of ``servicer``'s ``method``, if it has one."""
    return getattr(getattr(servicer, method, None), ATTRIBUTE, None)


@dataclass(frozen=True)
class Guard:
    """A mounted method's declaration and the verifier of its viewers' tokens."""

    access: Access
    viewers: TokenVerifier | None = None


# a method mounted without a declaration (a generated base's, unimplemented): refused
UNDECLARED = Guard(Access(frozenset({"nobody"})))
# the scaffold's own health service
HEALTH_CHECK = Guard(Access(frozenset(), "load balancers and orchestrators probe it unannounced"))


class AccessStage(Stage):
    """Checks each call's credential against its method's declaration.

    ``guards`` names every mounted method (full name); a wrapped method missing from it
    is refused, never let through. ``credentials`` verifies operator, node and service
    credentials (None: none is accepted)."""

    def __init__(self, guards: dict[str, Guard], credentials: TokenVerifier | None) -> None:
        super().__init__()
        self.guards = guards
        self.credentials = credentials

    def _guard(self, method: str) -> Guard:
        return self.guards.get(method, UNDECLARED)

    def unary(self, method: str, inner: UnaryStep) -> UnaryStep:
        guard = self._guard(method)
        if guard.access.public:
            return inner

        async def handle(request: Any, ctx: grpc.aio.ServicerContext, call: Inbound) -> Any:
            await self.check(guard, method, request, ctx)
            return await inner(request, ctx, call)

        return handle

    def stream(self, method: str, inner: StreamStep) -> StreamStep:
        guard = self._guard(method)
        if guard.access.public:
            return inner

        async def handle(
            request: Any, ctx: grpc.aio.ServicerContext, call: Inbound
        ) -> AsyncIterator[Any]:
            await self.check(guard, method, request, ctx)
            async for item in inner(request, ctx, call):
                yield item

        return handle

    async def check(
        self, guard: Guard, method: str, request: Any, ctx: grpc.aio.ServicerContext
    ) -> Principal:
        """The caller's principal, if the declaration admits it; else the error."""
        if guard is UNDECLARED:
            raise PermissionDenied(f"{method} declares no access")
        access = guard.access
        principal = await self._principal(bearer_token(ctx), guard)
        if principal.role not in access.roles:
            wanted = " or ".join(sorted(access.roles))
            raise PermissionDenied(f"{method} takes a {wanted} credential, not a {principal.role}")
        if access.speaks_for is not None and principal.role == NODE:
            target = subject(NODE, access.speaks_for(request))
            if principal.account != target:
                raise PermissionDenied(f"{principal.account} may speak only for itself")
        return principal

    async def _principal(self, token: str, guard: Guard) -> Principal:
        """Verified by the verifier the method's role points to first, then by the other
        one, so that a valid credential of the wrong kind is told apart from a forgery."""
        verifiers = [v for v in (guard.viewers, self.credentials) if v is not None]
        if VIEWER not in guard.access.roles:
            verifiers.reverse()
        if not verifiers:
            raise Unauthenticated("this server verifies no credentials (none configured)")
        first: ServiceError | None = None
        for verifier in verifiers:
            try:
                principal = await verifier.verify(token)
            except Unauthenticated as exc:
                first = first or exc
                continue
            if verifier is guard.viewers and principal.role != VIEWER:
                raise Unauthenticated("identity's keys sign viewer tokens only")
            return principal
        assert first is not None
        raise first
