"""Identity service: sign-up, sign-in, token verification and signing-key rotation.

Accounts and signing keys are kept in Redis, so every identity instance signs with
the same active key and verifies the others' tokens:

=============================  ==================================================
``lm:id:email:{email}``        account id of an email (SET NX makes sign-up unique)
``lm:id:acct:{id}``            hash: email, display_name, pwhash, ent (JSON), ctime
``lm:id:req:{request_id}``     account id a SignUp with that request id created (24 h)
``lm:id:keys``                 hash kid -> JSON {private PEM, public PEM, ctime}
``lm:id:keyorder``             list of kids, newest first; the first one signs
``lm:id:rot:{request_id}``     kid a RotateSigningKey with that request id made (24 h)
=============================  ==================================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass

import argon2
import grpc
import jwt
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from livemesh.identity.v1 import identity_pb2 as pb
from livemesh.identity.v1 import identity_pb2_grpc as pb_grpc
from services.common import validate
from services.common.auth import ALGORITHM, AUDIENCE, ISSUER, TokenVerifier
from services.common.clients import ChannelFactory
from services.common.errors import AlreadyExists, InvalidArgument, Unauthenticated
from services.common.process import Service, connect_redis, service_main
from services.common.server import ServiceSpec

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
DEFAULT_ENTITLEMENTS = ("plan/standard", "live")
DEFAULT_TOKEN_TTL_S = 3600
KEYS_KEPT = 3  # the active key and the two before it still verify
IDEMPOTENCY_TTL_S = 24 * 3600


def password_hasher() -> argon2.PasswordHasher:
    """argon2id with OWASP's baseline: 19 MiB, 2 passes, 1 lane."""
    return argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class _Key:
    kid: str
    private: Ed25519PrivateKey
    public_pem: str
    create_s: float


def _new_key() -> tuple[str, str]:
    """A fresh Ed25519 key: (kid, JSON record)."""
    private = Ed25519PrivateKey.generate()
    record = {
        "private": private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "public": private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "ctime": time.time(),
    }
    return f"k{int(time.time())}-{secrets.token_hex(4)}", json.dumps(record)


class IdentityStore:
    """Accounts and keys in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def keys(self) -> list[_Key]:
        """The kept keys, the signing one first; makes the first key if there is none."""
        order = list(await self.redis.lrange("lm:id:keyorder", 0, KEYS_KEPT - 1))
        if not order:
            await self.rotate(initial=True)
            order = list(await self.redis.lrange("lm:id:keyorder", 0, 0))
        records = await self.redis.hmget("lm:id:keys", order)
        keys = []
        for kid, raw in zip(order, records, strict=True):
            if raw is None:
                continue
            data = json.loads(raw)
            private = serialization.load_pem_private_key(data["private"].encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            keys.append(_Key(str(kid), private, data["public"], data["ctime"]))
        return keys

    async def rotate(self, request_id: str = "", initial: bool = False) -> str:
        """Make a new signing key; with ``initial``, only if there is none (first start)."""
        if request_id:
            done = await self.redis.get(f"lm:id:rot:{request_id}")
            if done:
                return str(done)
        kid, record = _new_key()
        # two instances starting at once: only one makes the first key
        if initial and not await self.redis.set("lm:id:firstkey", kid, nx=True):
            for _ in range(100):  # the winner writes it in one transaction, right after
                if await self.redis.llen("lm:id:keyorder"):
                    break
                await asyncio.sleep(0.01)
            return str(await self.redis.get("lm:id:firstkey") or "")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset("lm:id:keys", kid, record)
            pipe.lpush("lm:id:keyorder", kid)
            if request_id:
                pipe.set(f"lm:id:rot:{request_id}", kid, ex=IDEMPOTENCY_TTL_S)
            await pipe.execute()
        return kid


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, store: IdentityStore, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.store = store
        self.redis = store.redis
        self.token_ttl_s = token_ttl_s
        self.hasher = password_hasher()
        # a hash to verify against when the email is unknown, so both paths take as long
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        self.verifier = TokenVerifier(self._signing_keys, refresh_interval_s=0.0)

    async def _signing_keys(self) -> list[pb.SigningKey]:
        return [self._key_message(k, i == 0) for i, k in enumerate(await self.store.keys())]

    @staticmethod
    def _key_message(key: _Key, active: bool) -> pb.SigningKey:
        message = pb.SigningKey(
            name=f"signingKeys/{key.kid}", key_id=key.kid, algorithm=ALGORITHM,
            public_key_pem=key.public_pem,
            state=pb.KEY_STATE_ACTIVE if active else pb.KEY_STATE_RETIRED,
        )
        message.create_time.FromNanoseconds(int(key.create_s * 1e9))
        return message

    async def _account(self, account_id: str) -> tuple[pb.Account, str]:
        raw = await self.redis.hgetall(f"lm:id:acct:{account_id}")
        account = pb.Account(
            name=f"accounts/{account_id}", email=str(raw["email"]),
            display_name=str(raw["display_name"]), entitlements=json.loads(raw["ent"]),
        )
        account.create_time.FromNanoseconds(int(raw["ctime"]))
        return account, str(raw["pwhash"])

    async def _issue(self, account: pb.Account) -> tuple[str, int]:
        key = (await self.store.keys())[0]
        now = int(time.time())
        expires = now + self.token_ttl_s
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": account.name, "iat": now, "exp": expires,
            "ent": list(account.entitlements), "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, expires

    @staticmethod
    def _email(value: str) -> str:
        email = validate.required(value, "email", max_len=254).strip().lower()
        if not EMAIL.match(email):
            raise InvalidArgument("email", "is not an email address")
        return email

    async def SignUp(
        self, request: pb.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignUpResponse:
        email = self._email(request.email)
        password = request.password
        if not 8 <= len(password) <= 256:
            raise InvalidArgument("password", "must be 8-256 characters")
        display_name = validate.text(request.display_name, "display_name", 1, 100)
        request_id = validate.request_id(request.request_id)
        if request_id:
            earlier = await self.redis.get(f"lm:id:req:{request_id}")
            if earlier:
                return await self._signed_up(str(earlier))
        account_id = secrets.token_hex(8)
        if not await self.redis.set(f"lm:id:email:{email}", account_id, nx=True):
            raise AlreadyExists("an account with this email exists", "email")
        pwhash = await asyncio.to_thread(self.hasher.hash, password)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"lm:id:acct:{account_id}", mapping={
                "email": email, "display_name": display_name, "pwhash": pwhash,
                "ent": json.dumps(list(DEFAULT_ENTITLEMENTS)), "ctime": time.time_ns(),
            })
            if request_id:
                pipe.set(f"lm:id:req:{request_id}", account_id, ex=IDEMPOTENCY_TTL_S)
            await pipe.execute()
        return await self._signed_up(account_id)

    async def _signed_up(self, account_id: str) -> pb.SignUpResponse:
        account, _ = await self._account(account_id)
        token, expires = await self._issue(account)
        response = pb.SignUpResponse(account=account, access_token=token)
        response.expire_time.FromSeconds(expires)
        return response

    async def SignIn(
        self, request: pb.SignInRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignInResponse:
        email = self._email(request.email)
        validate.required(request.password, "password", max_len=256)
        account_id = await self.redis.get(f"lm:id:email:{email}")
        stored = self._dummy_hash
        account = None
        if account_id is not None:
            account, stored = await self._account(str(account_id))
        try:
            await asyncio.to_thread(self.hasher.verify, stored, request.password)
        except argon2.exceptions.VerificationError:
            account = None
        if account is None:
            raise Unauthenticated("wrong email or password")
        token, expires = await self._issue(account)
        response = pb.SignInResponse(account=account, access_token=token)
        response.expire_time.FromSeconds(expires)
        return response

    async def VerifyToken(
        self, request: pb.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyTokenResponse:
        validate.required(request.access_token, "access_token", max_len=4096)
        principal = await self.verifier.verify(request.access_token)
        response = pb.VerifyTokenResponse(
            account=principal.account, entitlements=principal.entitlements,
            key_id=principal.key_id,
        )
        response.expire_time.FromSeconds(principal.expires_s)
        return response

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        kid = await self.store.rotate(validate.request_id(request.request_id))
        keys = await self.store.keys()
        key = next(k for k in keys if k.kid == kid)
        return pb.RotateSigningKeyResponse(key=self._key_message(key, keys[0].kid == kid))

    async def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSigningKeysResponse:
        return pb.ListSigningKeysResponse(keys=await self._signing_keys())


class IdentityService(Service):
    def __init__(self, redis_url: str, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.redis = connect_redis(redis_url)
        self.servicer = IdentityServicer(IdentityStore(self.redis), token_ttl_s)

    def specs(self) -> list[ServiceSpec]:
        return [ServiceSpec(
            pb.DESCRIPTOR.services_by_name["IdentityService"].full_name,
            self.servicer, pb_grpc.add_IdentityServiceServicer_to_server,
        )]

    async def start(self) -> None:
        await self.servicer.store.keys()  # makes the first key before the first call

    async def close(self) -> None:
        await self.redis.aclose()


async def build(args: argparse.Namespace, factory: ChannelFactory) -> Service:
    return IdentityService(args.redis_url, args.token_ttl)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-ttl", type=int, default=DEFAULT_TOKEN_TTL_S,
                        help="access token lifetime, seconds")


def main(argv: list[str] | None = None) -> int:
    return service_main("identity", argv, build, add_arguments, needs_redis=True)
