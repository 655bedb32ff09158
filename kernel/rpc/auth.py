"""Access tokens verified locally (no network hop per call).

Identity signs JWTs with Ed25519 (``EdDSA``) and a ``kid`` header; services keep
the public keys from ``IdentityService.ListSigningKeys`` and fetch them again only
when a token names a key they do not know (a rotation), at most once per
``refresh_interval_s``.

A token verified once is remembered (up to ``cache_size`` tokens) with its principal
until it expires, so a viewer's next calls cost a dictionary lookup instead of an
Ed25519 verification (~60 µs plus PyJWT's parsing, about a sixth of the gateway's CPU
per press-play). The remembered answer is used only while the same key object still
verifies for its ``kid`` and before ``exp``, so it says exactly what a fresh check
would; a tampered token is another string and is checked in full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import PermissionDenied, Unauthenticated, Unavailable
from livemesh.identity.v1 import identity_pb2, identity_pb2_grpc

ISSUER = "livemesh-identity"
AUDIENCE = "livemesh"
ALGORITHM = "EdDSA"
MAX_TOKEN_LENGTH = 4096
# what a token's ``role`` claim may say; identity's access tokens carry none: viewers
VIEWER = "viewer"
OPERATOR = "operator"
NODE = "node"
SERVICE = "service"

KeyLoader = Callable[[], Awaitable[Sequence[identity_pb2.SigningKey]]]


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    account: str  # the subject: accounts/{id}; nodes/{name} or operators/{name} (credentials)
    entitlements: tuple[str, ...]
    key_id: str
    expires_s: int
    role: str = VIEWER

    def require_account(self, account: str) -> None:
        """PERMISSION_DENIED unless ``account`` is the caller's own."""
        if account != self.account:
            raise PermissionDenied("the resource belongs to another account")


class TokenVerifier:
    """Verifies access tokens with cached public keys: those ``load_keys`` fetches (None:
    fetch none) and the ``trusted`` ones, fixed by configuration, kept across fetches."""

    def __init__(
        self,
        load_keys: KeyLoader | None,
        refresh_interval_s: float = 1.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        trusted: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> None:
        self._load_keys = load_keys
        self._trusted = dict(trusted or {})
        self.refresh_interval_s = refresh_interval_s
        self.cache_size = cache_size
        self.clock = clock
        # token -> (its principal, the key that verified it); insertion order = age
        self._verified: dict[str, tuple[Principal, Ed25519PublicKey]] = {}
        self._keys: dict[str, Ed25519PublicKey] = dict(self._trusted)
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()  # one fetch at a time; the callers waiting share its result

    async def _refresh(self, kid: str) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._load_keys is None or kid in self._keys:
                return
            if now - self._loaded_at < self.refresh_interval_s:
                return
            try:
                loaded = await self._load_keys()
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(f"cannot fetch the signing keys ({exc.code().name})") from exc
            self._loaded_at = now
            self._keys = self._parse(loaded)

    def _parse(self, loaded: Sequence[identity_pb2.SigningKey]) -> dict[str, Ed25519PublicKey]:
        keys: dict[str, Ed25519PublicKey] = dict(self._trusted)
        for key in loaded:
            public = load_pem_public_key(key.public_key_pem.encode())
            if isinstance(public, Ed25519PublicKey):
                keys[key.key_id] = public
        return keys

    async def verify(self, token: str) -> Principal:
        """The token's principal; UNAUTHENTICATED when it is malformed, forged or expired."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("missing or oversized access token")
        known = self._verified.get(token)
        if known is not None:
            principal, key = known
            # PyJWT refuses exp <= now (whole seconds): the same test on the float clock
            if self.clock() < principal.expires_s and self._keys.get(principal.key_id) is key:
                return principal
            del self._verified[token]
        principal, key = await self._verify(token)
        self._remember(token, principal, key)
        return principal

    def _remember(self, token: str, principal: Principal, key: Ed25519PublicKey) -> None:
        verified = self._verified
        if len(verified) >= self.cache_size:
            now = self.clock()
            for old in [t for t, (p, _) in verified.items() if p.expires_s <= now]:
                del verified[old]
            while len(verified) >= self.cache_size:
                del verified[next(iter(verified))]  # the oldest
        verified[token] = (principal, key)

    async def _verify(self, token: str) -> tuple[Principal, Ed25519PublicKey]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed access token") from exc
        if not isinstance(kid, str):
            raise Unauthenticated("access token has no key id")
        if kid not in self._keys:
            await self._refresh(kid)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("access token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token") from exc
        entitlements = claims.get("ent", [])
        role = claims.get("role", VIEWER)
        if not isinstance(entitlements, list) or not isinstance(role, str):
            raise Unauthenticated("invalid access token")
        return Principal(
            account=str(claims["sub"]),
            entitlements=tuple(str(e) for e in entitlements),
            key_id=kid,
            expires_s=int(claims["exp"]),
            role=role,
        ), key


def identity_key_loader(factory: RpcChannelFactory, target: str) -> KeyLoader:
    """Loads the public keys from the identity service at ``target``."""

    async def load() -> Sequence[identity_pb2.SigningKey]:
        stub = factory.stub(identity_pb2_grpc.IdentityServiceStub, target)
        response = await stub.ListSigningKeys(identity_pb2.ListSigningKeysRequest())
        return list(response.keys)

    return load


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    """The token of the call's ``authorization: Bearer …`` metadata; UNAUTHENTICATED if none."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated("authorization must be 'Bearer <token>'")
    raise Unauthenticated("missing bearer token")


async def authenticate(context: grpc.aio.ServicerContext, verifier: TokenVerifier) -> Principal:
    """The verified principal of the calling viewer."""
    return await verifier.verify(bearer_token(context))


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata that presents ``token`` (a viewer's, forwarded; or a credential) to a server."""
    return (("authorization", f"Bearer {token}"),)
