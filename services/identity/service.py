"""Identity service: sign-up, sign-in, token verification and signing-key rotation.

Accounts, entitlements and signing keys are records in the relational database
(:mod:`.store`), so every identity instance signs with the same active key, verifies
the others' tokens, and nothing is lost when Redis restarts empty.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

import argon2
import grpc
import jwt

from kernel.config import DEFAULT_TOKEN_TTL_S, IdentitySettings
from kernel.db import connect_database
from kernel.rpc import access, validate
from kernel.rpc.auth import ALGORITHM, AUDIENCE, ISSUER, TokenVerifier
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import AlreadyExists, InvalidArgument, Unauthenticated
from kernel.rpc.process import Service, service_main
from kernel.rpc.server import ServiceSpec
from livemesh.identity.v1 import identity_pb2 as pb
from livemesh.identity.v1 import identity_pb2_grpc as pb_grpc
from services.identity.store import Account, EmailTaken, IdentityStore, SigningKey

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
DEFAULT_ENTITLEMENTS = ("plan/standard", "live")


def password_hasher() -> argon2.PasswordHasher:
    """argon2id with OWASP's baseline: 19 MiB, 2 passes, 1 lane."""
    return argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, store: IdentityStore, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.store = store
        self.token_ttl_s = token_ttl_s
        self.hasher = password_hasher()
        # a hash to verify against when the email is unknown, so both paths take as long
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        self.verifier = TokenVerifier(self._signing_keys, refresh_interval_s=0.0)

    async def _signing_keys(self) -> list[pb.SigningKey]:
        return [self._key_message(k, i == 0) for i, k in enumerate(await self.store.keys())]

    @staticmethod
    def _key_message(key: SigningKey, active: bool) -> pb.SigningKey:
        message = pb.SigningKey(
            name=f"signingKeys/{key.kid}",
            key_id=key.kid,
            algorithm=ALGORITHM,
            public_key_pem=key.public_pem,
            state=pb.KEY_STATE_ACTIVE if active else pb.KEY_STATE_RETIRED,
        )
        message.create_time.FromNanoseconds(int(key.create_s * 1e9))
        return message

    @staticmethod
    def _account(record: Account) -> pb.Account:
        account = pb.Account(
            name=f"accounts/{record.id}",
            email=record.email,
            display_name=record.display_name,
            entitlements=record.entitlements,
        )
        account.create_time.FromNanoseconds(record.create_ns)
        return account

    async def _issue(self, account: pb.Account) -> tuple[str, int]:
        key = (await self.store.keys())[0]
        now = int(time.time())
        expires = now + self.token_ttl_s
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": account.name,
            "iat": now,
            "exp": expires,
            "ent": list(account.entitlements),
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, expires

    @staticmethod
    def _email(value: str) -> str:
        email = validate.required(value, "email", max_len=254).strip().lower()
        if not EMAIL.match(email):
            raise InvalidArgument("email", "is not an email address")
        return email

    @access.public("how a viewer gets an account")
    async def SignUp(
        self, request: pb.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignUpResponse:
        email = self._email(request.email)
        password = request.password
        if not 8 <= len(password) <= 256:
            raise InvalidArgument("password", "must be 8-256 characters")
        # optional: a sign-up needs no more than an email and a password
        display_name = validate.text(
            request.display_name or request.email.strip().partition("@")[0], "display_name", 1, 100
        )
        request_id = validate.request_id(request.request_id)
        account_id = await self.store.account_for_request(request_id)
        if account_id is None:
            pwhash = await asyncio.to_thread(self.hasher.hash, password)
            try:
                account_id = await self.store.create_account(
                    email, display_name, pwhash, DEFAULT_ENTITLEMENTS, request_id
                )
            except EmailTaken:
                raise AlreadyExists("an account with this email exists", "email") from None
        record = await self.store.account(account_id=account_id)
        assert record is not None  # accounts are never deleted
        account = self._account(record)
        token, expires = await self._issue(account)
        response = pb.SignUpResponse(account=account, access_token=token)
        response.expire_time.FromSeconds(expires)
        return response

    @access.public("how a viewer gets a token")
    async def SignIn(
        self, request: pb.SignInRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignInResponse:
        email = self._email(request.email)
        validate.required(request.password, "password", max_len=256)
        record = await self.store.account(email=email)
        stored = self._dummy_hash if record is None else record.password_hash
        account = None if record is None else self._account(record)
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

    @access.public(
        "it tells only about the token the caller presents, what anyone can check with "
        "the public keys ListSigningKeys hands out"
    )
    async def VerifyToken(
        self, request: pb.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyTokenResponse:
        validate.required(request.access_token, "access_token", max_len=4096)
        principal = await self.verifier.verify(request.access_token)
        response = pb.VerifyTokenResponse(
            account=principal.account,
            entitlements=principal.entitlements,
            key_id=principal.key_id,
        )
        response.expire_time.FromSeconds(principal.expires_s)
        return response

    @access.operator
    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        kid = await self.store.rotate(validate.request_id(request.request_id))
        keys = await self.store.keys()
        key = next(k for k in keys if k.kid == kid)
        return pb.RotateSigningKeyResponse(key=self._key_message(key, keys[0].kid == kid))

    @access.public("public keys: every verifier (and any client) needs them")
    async def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSigningKeysResponse:
        return pb.ListSigningKeysResponse(keys=await self._signing_keys())


class IdentityService(Service):
    def __init__(self, database_url: str, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        self.engine = connect_database(database_url)
        self.servicer = IdentityServicer(IdentityStore(self.engine), token_ttl_s)

    def specs(self) -> list[ServiceSpec]:
        return [
            ServiceSpec(
                pb.DESCRIPTOR.services_by_name["IdentityService"].full_name,
                self.servicer,
                pb_grpc.add_IdentityServiceServicer_to_server,
                viewers=self.servicer.verifier,
            )
        ]

    async def start(self) -> None:
        await self.servicer.store.migrate()
        await self.servicer.store.keys()  # makes the first key before the first call

    async def close(self) -> None:
        await self.engine.dispose()


async def build(settings: IdentitySettings, factory: RpcChannelFactory) -> Service:
    assert settings.database_url  # the process's embedded SQLite when none is set
    return IdentityService(settings.database_url, settings.token_ttl)


def main(argv: list[str] | None = None) -> int:
    return service_main(IdentitySettings, argv, build)
