"""Identity's records in the relational database (:mod:`kernel.db`).

Accounts, their entitlements and the signing keys must outlive Redis: a lost account
cannot sign in, and a lost key signs every viewer out. So they live here, with the
constraints that make sign-up safe (one account per email, one per request id, no
entitlement without its account) and the first key made once however many instances
start at once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.db import Migration, database_down, migrate
from kernel.rpc.cache import ReadThroughCache

COMPONENT = "identity"
KEYS_KEPT = 3  # the active key and the two before it still verify
KEYS_CACHE_S = 1.0  # another instance's rotation is seen within this

MIGRATIONS = (
    Migration(
        1,
        "accounts, entitlements, signing keys",
        (
            """CREATE TABLE identity_accounts (
                id VARCHAR(32) PRIMARY KEY,
                email VARCHAR(254) NOT NULL UNIQUE,
                display_name VARCHAR(100) NOT NULL,
                password_hash TEXT NOT NULL,
                create_ns BIGINT NOT NULL,
                request_id VARCHAR(128) UNIQUE
            )""",
            """CREATE TABLE identity_entitlements (
                account_id VARCHAR(32) NOT NULL
                    REFERENCES identity_accounts (id) ON DELETE CASCADE,
                entitlement VARCHAR(100) NOT NULL,
                PRIMARY KEY (account_id, entitlement)
            )""",
            """CREATE TABLE identity_signing_keys (
                kid VARCHAR(64) PRIMARY KEY,
                private_pem TEXT NOT NULL,
                public_pem TEXT NOT NULL,
                create_s DOUBLE PRECISION NOT NULL,
                request_id VARCHAR(128) UNIQUE
            )""",
            # one row at most: the instance that inserts it makes the first key
            """CREATE TABLE identity_first_key (
                one INTEGER PRIMARY KEY CHECK (one = 1),
                kid VARCHAR(64) NOT NULL REFERENCES identity_signing_keys (kid)
            )""",
        ),
    ),
)

accounts = sa.table(
    "identity_accounts",
    sa.column("id", sa.String),
    sa.column("email", sa.String),
    sa.column("display_name", sa.String),
    sa.column("password_hash", sa.String),
    sa.column("create_ns", sa.BigInteger),
    sa.column("request_id", sa.String),
)
entitlements = sa.table(
    "identity_entitlements", sa.column("account_id", sa.String), sa.column("entitlement", sa.String)
)
signing_keys = sa.table(
    "identity_signing_keys",
    sa.column("kid", sa.String),
    sa.column("private_pem", sa.String),
    sa.column("public_pem", sa.String),
    sa.column("create_s", sa.Float),
    sa.column("request_id", sa.String),
)
first_key = sa.table(
    "identity_first_key", sa.column("one", sa.Integer), sa.column("kid", sa.String)
)


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    display_name: str
    password_hash: str
    create_ns: int
    entitlements: tuple[str, ...]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey
    public_pem: str
    create_s: float


class EmailTaken(Exception):
    """Sign-up met the unique email of an existing account."""


def _new_key(request_id: str | None) -> dict[str, object]:
    """A fresh Ed25519 key as a row of ``identity_signing_keys``."""
    private = Ed25519PrivateKey.generate()
    return {
        "kid": f"k{int(time.time())}-{secrets.token_hex(4)}",
        "private_pem": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "public_pem": private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        "create_s": time.time(),
        "request_id": request_id,
    }


class IdentityStore:
    """Accounts and keys in the database; the kept keys are read through a short cache
    that answers its last list while the database is down (tokens still verify)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._keys: ReadThroughCache[list[SigningKey]] = ReadThroughCache(
            KEYS_CACHE_S, stale_if=database_down
        )

    async def migrate(self) -> None:
        await migrate(self.engine, COMPONENT, MIGRATIONS)

    async def create_account(
        self,
        email: str,
        display_name: str,
        password_hash: str,
        granted: tuple[str, ...],
        request_id: str,
    ) -> str:
        """The new account's id, or the one an earlier sign-up with ``request_id`` made.
        Raises :class:`EmailTaken`."""
        account_id = secrets.token_hex(8)
        row = {
            "id": account_id,
            "email": email,
            "display_name": display_name,
            "password_hash": password_hash,
            "create_ns": time.time_ns(),
            "request_id": request_id or None,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(accounts).values(row))
                await conn.execute(
                    sa.insert(entitlements),
                    [{"account_id": account_id, "entitlement": e} for e in granted],
                )
        except IntegrityError:
            earlier = await self.account_for_request(request_id)
            if earlier is None:
                raise EmailTaken(email) from None
            return earlier
        return account_id

    async def account_for_request(self, request_id: str) -> str | None:
        """The account a sign-up with ``request_id`` created, if one did."""
        if not request_id:
            return None
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                sa.select(accounts.c.id).where(accounts.c.request_id == request_id)
            )
        return None if found is None else str(found)

    async def account(self, account_id: str = "", email: str = "") -> Account | None:
        """The account with this id (or else this email), None if there is none."""
        where = accounts.c.id == account_id if account_id else accounts.c.email == email
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(accounts).where(where))).one_or_none()
            if row is None:
                return None
            granted = await conn.scalars(
                sa.select(entitlements.c.entitlement)
                .where(entitlements.c.account_id == row.id)
                .order_by(entitlements.c.entitlement)
            )
            return Account(
                row.id,
                row.email,
                row.display_name,
                row.password_hash,
                row.create_ns,
                tuple(granted),
            )

    async def keys(self) -> list[SigningKey]:
        """The kept keys, the signing one first; makes the first key if there is none."""
        return await self._keys.get("kept", self._load_keys)

    async def _load_keys(self) -> list[SigningKey]:
        rows = await self._key_rows()
        if not rows:
            await self.rotate(initial=True)
            rows = await self._key_rows()
        keys = []
        for row in rows:
            private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            keys.append(SigningKey(row.kid, private, row.public_pem, row.create_s))
        return keys

    async def _key_rows(self) -> list[sa.Row[tuple[str, str, str, float, str]]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                sa.select(signing_keys)
                .order_by(signing_keys.c.create_s.desc(), signing_keys.c.kid.desc())
                .limit(KEYS_KEPT)
            )
            return list(result)

    async def rotate(self, request_id: str = "", initial: bool = False) -> str:
        """Make a new signing key, or return the one a rotation with ``request_id`` made;
        with ``initial``, only if no instance made the first key yet."""
        row = _new_key(request_id or None)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(signing_keys).values(row))
                if initial:
                    await conn.execute(sa.insert(first_key).values(one=1, kid=row["kid"]))
        except IntegrityError:  # the same request, or another instance's first key
            async with self.engine.connect() as conn:
                earlier = await conn.scalar(
                    sa.select(first_key.c.kid)
                    if initial
                    else sa.select(signing_keys.c.kid).where(
                        signing_keys.c.request_id == request_id
                    )
                )
            return str(earlier)
        finally:
            self._keys.invalidate("kept")
        return str(row["kid"])
