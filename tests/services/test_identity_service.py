"""Identity: argon2id accounts, EdDSA JWTs with key ids, local verification, rotation."""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import jwt
import redis.asyncio as aioredis

from kernel.db import connect_database
from kernel.rpc.auth import TokenVerifier, identity_key_loader
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.errors import Unauthenticated, Unavailable
from livemesh.identity.v1 import identity_pb2 as pb
from livemesh.identity.v1 import identity_pb2_grpc as pb_grpc
from services.identity.service import IdentityService
from services.identity.store import IdentityStore
from tests.services.conftest import Metadata, Presenting, Start, expect_error


def sign_up(email: str = "Ada@Example.org", request_id: str = "") -> pb.SignUpRequest:
    return pb.SignUpRequest(
        email=email, password="correct horse battery", display_name="Ada", request_id=request_id
    )


async def test_sign_up_sign_in_verify_locally(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(IdentityService(database_url))
    stub = Presenting(factory.stub(pb_grpc.IdentityServiceStub, running.target), operator_auth)
    up = await stub.SignUp(sign_up(request_id="req-1"))
    assert up.account.email == "ada@example.org" and up.account.name.startswith("accounts/")
    again = await stub.SignUp(sign_up(request_id="req-1"))  # a retry: same account
    assert again.account.name == up.account.name
    # the password is stored as an argon2id hash, never in clear
    engine = connect_database(database_url)
    record = await IdentityStore(engine).account(account_id=up.account.name.split("/")[1])
    await engine.dispose()
    assert record is not None and record.password_hash.startswith("$argon2id$")

    signed_in = await stub.SignIn(
        pb.SignInRequest(email="ada@example.org", password="correct horse battery")
    )
    assert jwt.get_unverified_header(signed_in.access_token)["alg"] == "EdDSA"
    verifier = TokenVerifier(identity_key_loader(factory, running.target))
    principal = await verifier.verify(signed_in.access_token)
    assert principal.account == up.account.name and "plan/standard" in principal.entitlements
    remote = await stub.VerifyToken(pb.VerifyTokenRequest(access_token=signed_in.access_token))
    assert remote.account == up.account.name and remote.key_id == principal.key_id


async def test_bad_credentials_and_bad_input(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(IdentityService(database_url))
    stub = Presenting(factory.stub(pb_grpc.IdentityServiceStub, running.target), operator_auth)
    await stub.SignUp(sign_up())
    await expect_error(stub.SignUp(sign_up()), grpc.StatusCode.ALREADY_EXISTS)
    await expect_error(
        stub.SignIn(pb.SignInRequest(email="ada@example.org", password="wrongpass")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        stub.SignIn(pb.SignInRequest(email="nobody@example.org", password="x")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        stub.SignUp(pb.SignUpRequest(email="not-an-email", password="12345678", display_name="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "email",
    )
    await expect_error(
        stub.SignUp(pb.SignUpRequest(email="b@example.org", password="short", display_name="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "password",
    )
    await expect_error(
        stub.SignUp(pb.SignUpRequest(email="b@example.org", password="12345678", display_name=" ")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "display_name",
    )
    # no display name at all: the email's local part
    plain = await stub.SignUp(pb.SignUpRequest(email="Bea.K@example.org", password="12345678"))
    assert plain.account.display_name == "Bea.K"  # as typed
    await expect_error(
        stub.VerifyToken(pb.VerifyTokenRequest()), grpc.StatusCode.INVALID_ARGUMENT, "access_token"
    )
    await expect_error(
        stub.RotateSigningKey(pb.RotateSigningKeyRequest(request_id="no spaces")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    )


async def test_tampered_and_expired_tokens_are_refused(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(IdentityService(database_url))
    stub = Presenting(factory.stub(pb_grpc.IdentityServiceStub, running.target), operator_auth)
    token = (await stub.SignUp(sign_up())).access_token
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["ent"].append("plan/premium")
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    error = await expect_error(
        stub.VerifyToken(pb.VerifyTokenRequest(access_token=forged)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert "invalid" in (error.details() or "")

    expiring = await start(IdentityService(database_url, token_ttl_s=-60))
    stale = (
        await factory.stub(pb_grpc.IdentityServiceStub, expiring.target).SignIn(
            pb.SignInRequest(email="ada@example.org", password="correct horse battery")
        )
    ).access_token
    error = await expect_error(
        stub.VerifyToken(pb.VerifyTokenRequest(access_token=stale)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert "expired" in (error.details() or "")


async def test_rotation_keeps_old_tokens_valid_and_verifiers_learn_the_new_key(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(IdentityService(database_url))
    stub = Presenting(factory.stub(pb_grpc.IdentityServiceStub, running.target), operator_auth)
    old_token = (await stub.SignUp(sign_up())).access_token
    verifier = TokenVerifier(identity_key_loader(factory, running.target), refresh_interval_s=0)
    old = await verifier.verify(old_token)

    rotated = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(request_id="rot-1"))
    same = await stub.RotateSigningKey(pb.RotateSigningKeyRequest(request_id="rot-1"))
    assert rotated.key.key_id == same.key.key_id != old.key_id
    assert rotated.key.state == pb.KEY_STATE_ACTIVE
    keys = (await stub.ListSigningKeys(pb.ListSigningKeysRequest())).keys
    assert [k.key_id for k in keys] == [rotated.key.key_id, old.key_id]

    new_token = (
        await stub.SignIn(
            pb.SignInRequest(email="ada@example.org", password="correct horse battery")
        )
    ).access_token
    assert (await verifier.verify(new_token)).key_id == rotated.key.key_id  # refetched keys
    assert (await verifier.verify(old_token)).account == old.account

    try:
        await verifier.verify("a.b.c")
    except Unauthenticated as exc:
        assert "malformed" in exc.message
    else:
        raise AssertionError("a malformed token was accepted")


async def test_a_cold_verifier_fetches_keys_once_for_concurrent_callers(
    start: Start,
    factory: RpcChannelFactory,
    operator_auth: Metadata,
    redis: aioredis.Redis,
    redis_url: str,
    database_url: str,
) -> None:
    running = await start(IdentityService(database_url))
    stub = Presenting(factory.stub(pb_grpc.IdentityServiceStub, running.target), operator_auth)
    token = (await stub.SignUp(sign_up())).access_token
    loader = identity_key_loader(factory, running.target)
    fetches = 0

    async def counting() -> list[pb.SigningKey]:
        nonlocal fetches
        fetches += 1
        return list(await loader())

    verifier = TokenVerifier(counting)
    principals = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert {p.account for p in principals} == {principals[0].account} and fetches == 1

    down = TokenVerifier(identity_key_loader(factory, "127.0.0.1:1"))
    try:
        await down.verify(token)
    except Unavailable as exc:
        assert "signing keys" in exc.message
    else:
        raise AssertionError("verified without keys")
