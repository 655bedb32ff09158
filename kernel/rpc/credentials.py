"""Operator, node and service credentials: JWTs with a ``role`` claim, signed with the
configured credential key.

Viewers get their tokens from identity (its keys rotate and live in Redis). Whoever
acts on the stack itself (an operator at grpcurl, an edge registering, a script)
presents a token signed by a separate Ed25519 key that only the deployment holds:
``LIVEMESH_CREDENTIAL_KEY_FILE`` (the private key, PEM) where tokens are minted (the
``livemesh admin token`` command, the demo supervisor), and its public half,
``LIVEMESH_CREDENTIAL_PUBLIC_KEY`` (PEM text: nothing secret), where they are verified
(every server); both are :class:`kernel.config.CredentialSettings`.
A server given only the private key file derives the public half from it. There is
no default key: without the setting, minting fails naming it and servers accept no
credential (their operator, node and service methods answer UNAUTHENTICATED).

The token has identity's issuer and audience and a ``kid`` naming the key (``cred-``
and the key's fingerprint), so the same verifier code checks it; ``sub`` names who
speaks: ``operators/{name}``, ``nodes/{instance id}`` or ``services/{name}``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import MutableMapping
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kernel.config import CredentialSettings, load
from kernel.config.trust import CREDENTIAL_KEY_FILE_ENV, CREDENTIAL_PUBLIC_KEY_ENV
from kernel.rpc.auth import ALGORITHM, AUDIENCE, ISSUER, NODE, OPERATOR, SERVICE, TokenVerifier

KEY_FILE_ENV, PUBLIC_KEY_ENV = CREDENTIAL_KEY_FILE_ENV, CREDENTIAL_PUBLIC_KEY_ENV
ROLES = (OPERATOR, NODE, SERVICE)
SUBJECT_PREFIX = {OPERATOR: "operators", NODE: "nodes", SERVICE: "services"}
DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 86_400


class MissingKey(RuntimeError):
    """The credential key is not configured (the message names the setting)."""


def key_id(public: Ed25519PublicKey) -> str:
    """``cred-`` and the first 12 hex digits of the key's SHA-256: stable across restarts."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"cred-{hashlib.sha256(raw).hexdigest()[:12]}"


def subject(role: str, name: str) -> str:
    """The ``sub`` of a ``role`` credential for ``name``."""
    return f"{SUBJECT_PREFIX[role]}/{name}"


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def signing_key_from_env() -> Ed25519PrivateKey:
    """The configured private key; :class:`MissingKey` naming the setting when unset."""
    path = load(CredentialSettings).settings.credential_key_file
    if path is None:
        raise MissingKey(f"{KEY_FILE_ENV} is not set (the Ed25519 private key, PEM)")
    return load_private_key(path)


def public_key_from_env() -> Ed25519PublicKey | None:
    """The key credentials are verified with, or None when neither setting is there."""
    settings = load(CredentialSettings).settings
    if settings.credential_public_key is not None:
        key = serialization.load_pem_public_key(settings.credential_public_key.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{PUBLIC_KEY_ENV}: not an Ed25519 public key")
        return key
    if settings.credential_key_file is not None:
        return load_private_key(settings.credential_key_file).public_key()
    return None


def credential_verifier(public: Ed25519PublicKey) -> TokenVerifier:
    """A verifier that trusts ``public`` alone and never fetches keys."""
    return TokenVerifier(None, trusted={key_id(public): public})


def mint(private: Ed25519PrivateKey, role: str, name: str, ttl_s: int = DEFAULT_TTL_S) -> str:
    """A ``role`` credential for ``name``, valid for ``ttl_s`` seconds."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name:
        raise ValueError("a credential names its subject")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be 1-{MAX_TTL_S} seconds")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject(role, name),
        "role": role,
        "iat": now,
        "exp": now + ttl_s,
        "jti": secrets.token_hex(8),
    }
    headers = {"kid": key_id(private.public_key())}
    return jwt.encode(claims, private, algorithm=ALGORITHM, headers=headers)


def public_pem(key: Ed25519PrivateKey) -> str:
    """The public half of ``key``, as :data:`PUBLIC_KEY_ENV` carries it."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def operator_for_this_run(environ: MutableMapping[str, str], name: str) -> str:
    """An operator credential from a fresh key whose public half ``environ`` now names, for
    a run that starts its own servers (a benchmark) and registers by hand."""
    key = Ed25519PrivateKey.generate()
    environ[PUBLIC_KEY_ENV] = public_pem(key)
    return mint(key, OPERATOR, name)


def write_new_key(path: Path) -> Ed25519PrivateKey:
    """Make a fresh key and write it to ``path``, readable by its owner only."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key
