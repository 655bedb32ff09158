"""Signed URL tokens (DESIGN.md §5): who may fetch which path prefix, until when.

A token is one path component, so a player that resolves the MPD's relative URLs
keeps it: ``/t/{token}/live/demo/manifest.mpd`` → ``/t/{token}/live/demo/e1/v720/7.m4s``.

Wire form (every part is URL-safe, none contains ``/`` or ``.``)::

    {kid}.{expires_s}.{b64url(path_prefix)}.{b64url(session)}.{b64url(mac)}

``mac = HMAC-SHA256(key[kid], "lm1\\n{kid}\\n{expires_s}\\n{path_prefix}\\n{session}")``.
The key id lets keys rotate: the first key signs, every listed key verifies.
Keys come from ``LIVEMESH_TOKEN_KEYS`` (``kid1:hexsecret,kid2:hexsecret``). There is no
default key: whoever signs or verifies without one refuses to start, naming the setting
(``livemesh demo`` makes keys for its run with :func:`new_keys`).

Verification is pure (no I/O, no control-plane call): an edge does it per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from kernel import clock
from kernel.config import TokenSettings, load

TOKEN_PREFIX = "/t/"
MAX_TOKEN_LENGTH = 1024
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VERSION = "lm1"


class TokenError(Exception):
    """A token that must not be honoured; ``reason`` is a short machine-readable word."""

    reason = "invalid"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail


class MalformedToken(TokenError):
    reason = "malformed"


class UnknownKey(TokenError):
    reason = "unknown-key"


class BadSignature(TokenError):
    reason = "bad-signature"


class TokenExpired(TokenError):
    reason = "expired"


class PathNotCovered(TokenError):
    reason = "path-not-covered"


@dataclass(frozen=True)
class Claims:
    """What a verified token grants."""

    kid: str
    path_prefix: str
    session: str
    expires_s: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise MalformedToken("bad base64")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise MalformedToken("bad base64") from exc


def parse_keys(spec: str) -> dict[str, bytes]:
    """``kid1:hexsecret,kid2:hexsecret`` → ordered ``{kid: secret}``; the first one signs."""
    keys: dict[str, bytes] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, secret = item.partition(":")
        if not sep or not _KID.match(kid):
            raise ValueError(f"token key {item[:40]!r}: expected kid:hexsecret")
        try:
            raw = bytes.fromhex(secret)
        except ValueError as exc:
            raise ValueError(f"token key {kid!r}: secret is not hex") from exc
        if len(raw) < 16:
            raise ValueError(f"token key {kid!r}: secret shorter than 16 bytes")
        keys[kid] = raw
    if not keys:
        raise ValueError("no token keys given")
    return keys


def new_keys() -> str:
    """A fresh key spec (``run-<random kid>:<32 random bytes, hex>``) for a run that signs
    and verifies its own tokens and nothing else (the demo, a test, a benchmark)."""
    return f"run-{secrets.token_hex(4)}:{secrets.token_hex(32)}"


def path_is_clean(path: str) -> bool:
    """An absolute path without empty, ``.`` or ``..`` segments or backslashes."""
    if not path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    parts = path[1:].split("/")
    # a trailing "/" (empty last part) is allowed; empty parts elsewhere are not
    return all(p not in ("", ".", "..") for p in parts[:-1]) and parts[-1] not in (".", "..")


def prefix_covers(prefix: str, path: str) -> bool:
    """Whether ``prefix`` grants ``path``: equal, or a whole-segment prefix of it."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def split_token(path: str) -> tuple[str | None, str]:
    """``/t/{token}/rest`` → ``(token, "/rest")``; any other path → ``(None, path)``."""
    if not path.startswith(TOKEN_PREFIX):
        return None, path
    end = path.find("/", len(TOKEN_PREFIX))
    if end < 0:
        return path[len(TOKEN_PREFIX) :], "/"
    return path[len(TOKEN_PREFIX) : end], path[end:]


def tokenized(token: str, path: str) -> str:
    """The URL path a player uses: ``/t/{token}`` in front of ``path``."""
    return f"{TOKEN_PREFIX}{token}{path}"


class TokenSigner:
    """Signs and verifies tokens with a rotating set of HMAC keys."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("no token keys given")
        for kid in keys:
            if not _KID.match(kid):
                raise ValueError(f"bad key id {kid!r}")
        self.keys = dict(keys)
        self.active_kid = next(iter(self.keys))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TokenSigner:
        """The signer of the ``token_keys`` setting (``LIVEMESH_TOKEN_KEYS``, read from
        ``env`` when given); :class:`kernel.config.ConfigError` naming it when unset."""
        return cls(parse_keys(load(TokenSettings, environ=env).settings.required_token_keys()))

    @classmethod
    def from_spec(cls, spec: str) -> TokenSigner:
        return cls(parse_keys(spec))

    @staticmethod
    def _message(kid: str, expires_s: int, prefix: str, session: str) -> bytes:
        return f"{_VERSION}\n{kid}\n{expires_s}\n{prefix}\n{session}".encode()

    def _mac(self, kid: str, expires_s: int, prefix: str, session: str) -> bytes:
        msg = self._message(kid, expires_s, prefix, session)
        return hmac.new(self.keys[kid], msg, hashlib.sha256).digest()

    def sign(self, path_prefix: str, session: str, ttl_s: int, now_s: float | None = None) -> str:
        """A token granting every path under ``path_prefix`` for ``ttl_s`` seconds."""
        if not path_is_clean(path_prefix):
            raise ValueError(f"path prefix {path_prefix!r} is not a clean absolute path")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = clock.now_s() if now_s is None else now_s
        expires = int(now) + int(ttl_s)
        kid = self.active_kid
        mac = self._mac(kid, expires, path_prefix, session)
        return ".".join(
            (kid, str(expires), _b64(path_prefix.encode()), _b64(session.encode()), _b64(mac))
        )

    def verify(self, token: str, path: str, now_s: float | None = None) -> Claims:
        """The token's claims if it is genuine, unexpired and covers ``path``; else raise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token too long")
        parts = token.split(".")
        if len(parts) != 5:
            raise MalformedToken("expected 5 fields")
        kid, exp_text, prefix_b64, session_b64, mac_b64 = parts
        if not exp_text.isdigit() or len(exp_text) > 12:
            raise MalformedToken("bad expiry")
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKey(kid[:32])
        try:
            prefix = _unb64(prefix_b64).decode()
            session = _unb64(session_b64).decode()
        except UnicodeDecodeError as exc:
            raise MalformedToken("bad text") from exc
        mac = _unb64(mac_b64)
        expires = int(exp_text)
        if not hmac.compare_digest(mac, self._mac(kid, expires, prefix, session)):
            raise BadSignature()
        now = clock.now_s() if now_s is None else now_s
        if now >= expires:
            raise TokenExpired(f"expired at {expires}")
        if not path_is_clean(path) or not prefix_covers(prefix, path):
            raise PathNotCovered(path[:200])
        return Claims(kid=kid, path_prefix=prefix, session=session, expires_s=expires)
