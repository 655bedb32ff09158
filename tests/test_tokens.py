"""Signed URL tokens: sign, verify, tamper, expire, rotate."""

from __future__ import annotations

import pytest

from kernel.config import ConfigError
from kernel.tokens import (
    BadSignature,
    MalformedToken,
    PathNotCovered,
    TokenError,
    TokenExpired,
    TokenSigner,
    UnknownKey,
    new_keys,
    parse_keys,
    split_token,
    tokenized,
)

K1 = "k1:" + "11" * 32
K2 = "k2:" + "22" * 32
NOW = 1_700_000_000.0


def test_sign_then_verify_returns_claims() -> None:
    signer = TokenSigner.from_spec(K1)
    token = signer.sign("/live/demo/", "sess-1", ttl_s=60, now_s=NOW)
    claims = signer.verify(token, "/live/demo/e1/v720/3.m4s", now_s=NOW + 10)
    assert claims.kid == "k1"
    assert claims.session == "sess-1"
    assert claims.path_prefix == "/live/demo/"
    assert claims.expires_s == int(NOW) + 60
    assert "/" not in token


def test_expired_token_is_rejected() -> None:
    signer = TokenSigner.from_spec(K1)
    token = signer.sign("/live/demo/", "s", ttl_s=5, now_s=NOW)
    with pytest.raises(TokenExpired):
        signer.verify(token, "/live/demo/manifest.mpd", now_s=NOW + 5)


@pytest.mark.parametrize("field", range(5))
def test_tampering_with_any_field_is_rejected(field: int) -> None:
    signer = TokenSigner.from_spec(K1)
    parts = signer.sign("/live/demo/", "s", ttl_s=60, now_s=NOW).split(".")
    replacement = ["k2", str(int(NOW) + 9999), "L2xpdmUv", "eA", "AAAA"][field]
    parts[field] = replacement
    with pytest.raises(TokenError):
        signer.verify(".".join(parts), "/live/demo/manifest.mpd", now_s=NOW)


def test_flipped_signature_bit_is_bad_signature() -> None:
    signer = TokenSigner.from_spec(K1)
    token = signer.sign("/live/demo/", "s", ttl_s=60, now_s=NOW)
    last = token[-1]
    forged = token[:-1] + ("A" if last != "A" else "B")
    with pytest.raises(BadSignature):
        signer.verify(forged, "/live/demo/manifest.mpd", now_s=NOW)


def test_path_outside_prefix_or_traversal_is_not_covered() -> None:
    signer = TokenSigner.from_spec(K1)
    token = signer.sign("/live/demo", "s", ttl_s=60, now_s=NOW)
    signer.verify(token, "/live/demo/manifest.mpd", now_s=NOW)
    for path in ("/live/demo2/manifest.mpd", "/live/other/x", "/live/demo/../other/x"):
        with pytest.raises(PathNotCovered):
            signer.verify(token, path, now_s=NOW)


def test_key_rotation_old_key_still_verifies_new_key_signs() -> None:
    old = TokenSigner.from_spec(K1)
    rotated = TokenSigner.from_spec(f"{K2},{K1}")
    token_old = old.sign("/live/", "s", ttl_s=60, now_s=NOW)
    assert rotated.verify(token_old, "/live/x", now_s=NOW).kid == "k1"
    token_new = rotated.sign("/live/", "s", ttl_s=60, now_s=NOW)
    assert token_new.startswith("k2.")
    with pytest.raises(UnknownKey):
        old.verify(token_new, "/live/x", now_s=NOW)


def test_malformed_tokens() -> None:
    signer = TokenSigner.from_spec(K1)
    for bad in ("", "a.b", "k1.x.y.z.w", "k1.1.!!.a.b", "k1." + "9" * 20 + ".a.b.c", "x" * 5000):
        with pytest.raises(MalformedToken):
            signer.verify(bad, "/live/x", now_s=NOW)


def test_keys_from_env_and_no_default() -> None:
    with pytest.raises(ConfigError, match="LIVEMESH_TOKEN_KEYS"):
        TokenSigner.from_env({"LIVEMESH_SETTINGS": ""})
    made, again = new_keys(), new_keys()
    assert made != again and len(parse_keys(made).popitem()[1]) == 32
    signer = TokenSigner.from_env({"LIVEMESH_TOKEN_KEYS": f"{K2},{K1}"})
    assert signer.active_kid == "k2" and set(signer.keys) == {"k1", "k2"}
    for bad in ("k1", "k1:zz", "k1:00", "bad kid:" + "11" * 32, ""):
        with pytest.raises(ValueError):
            parse_keys(bad)


def test_token_path_helpers() -> None:
    assert split_token("/t/abc/live/demo/manifest.mpd") == ("abc", "/live/demo/manifest.mpd")
    assert split_token("/live/demo/manifest.mpd") == (None, "/live/demo/manifest.mpd")
    assert tokenized("abc", "/live/x") == "/t/abc/live/x"


def test_sign_rejects_unclean_prefix() -> None:
    signer = TokenSigner.from_spec(K1)
    with pytest.raises(ValueError):
        signer.sign("live/demo", "s", ttl_s=60)
    with pytest.raises(ValueError):
        signer.sign("/live/../x", "s", ttl_s=60)
