"""``livemesh admin token``: credentials for grpcurl and scripts, from the configured key only."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from command import admin
from kernel.rpc import credentials
from kernel.rpc.errors import Unauthenticated


def test_without_the_key_the_command_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(credentials.KEY_FILE_ENV, raising=False)
    assert admin.main(["token", "--role", "operator"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and credentials.KEY_FILE_ENV in captured.err


def test_a_node_credential_needs_the_node_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert admin.main(["token", "--role", "node"]) == 2
    assert "--subject" in capsys.readouterr().err


async def test_the_minted_credential_verifies_with_the_public_key_alone(
    credential_key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin.main(["token", "--role", "node", "--subject", "edge-7", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    principal = await credentials.credential_verifier(credential_key.public_key()).verify(token)
    assert (principal.role, principal.account) == ("node", "nodes/edge-7")
    other = credentials.credential_verifier(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(Unauthenticated):
        await other.verify(token)
