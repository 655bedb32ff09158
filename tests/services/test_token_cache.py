"""The verifier's cache of verified tokens says exactly what a fresh check would."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.rpc.auth import ALGORITHM, AUDIENCE, ISSUER, TokenVerifier
from kernel.rpc.errors import Unauthenticated
from livemesh.identity.v1 import identity_pb2


def _key(kid: str) -> tuple[Ed25519PrivateKey, identity_pb2.SigningKey]:
    private = Ed25519PrivateKey.generate()
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, identity_pb2.SigningKey(key_id=kid, public_key_pem=pem)


def _token(private: Ed25519PrivateKey, kid: str, exp: int, sub: str = "accounts/a") -> str:
    claims = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": exp - 3600,
        "exp": exp,
        "ent": ["live"],
    }
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": kid})


async def test_a_cached_token_is_refused_once_expired_or_its_key_is_gone() -> None:
    private, public = _key("k1")
    served = [public]
    loads = 0

    async def load() -> list[identity_pb2.SigningKey]:
        nonlocal loads
        loads += 1
        return list(served)

    verifier = TokenVerifier(load, refresh_interval_s=0)
    exp = int(time.time()) + 2
    token = _token(private, "k1", exp)
    first = await verifier.verify(token)
    assert first.account == "accounts/a" and first.entitlements == ("live",)
    assert await verifier.verify(token) is first  # remembered: no second verification

    header, payload, signature = token.split(".")
    with pytest.raises(Unauthenticated, match="invalid"):
        await verifier.verify(f"{header}.{payload}.{signature[:-4]}AAAA")

    await asyncio.sleep(exp - time.time())  # PyJWT refuses exp <= now; so does the cache
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(token)

    # a key no longer served (and so no longer loaded) does not keep its tokens alive
    other_private, other = _key("k2")
    token2 = _token(private, "k1", int(time.time()) + 100, sub="accounts/b")
    assert (await verifier.verify(token2)).account == "accounts/b"
    served[:] = [other]
    with pytest.raises(Unauthenticated, match="unknown key"):
        # a token of an unknown key makes it reload: k2 only
        await verifier.verify(_token(other_private, "k3", int(time.time()) + 100))
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(token2)


async def test_the_cache_is_bounded() -> None:
    private, public = _key("k1")

    async def load() -> list[identity_pb2.SigningKey]:
        return [public]

    verifier = TokenVerifier(load, cache_size=3)
    exp = int(time.time()) + 100
    for i in range(10):
        await verifier.verify(_token(private, "k1", exp, sub=f"accounts/{i}"))
    assert len(verifier._verified) == 3
