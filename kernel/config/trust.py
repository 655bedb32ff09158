"""Settings of who a process is on the gRPC hops and whom it trusts: its mutual-TLS files
(:mod:`kernel.rpc.tls`) and the credential keys (:mod:`kernel.rpc.credentials`).

They come from the environment the demo supervisor hands each child (its own
certificate, the stack's public credential key, a node's credential), so the names of
the variables are part of the stack's contract and are kept here once.
"""

from __future__ import annotations

from pathlib import Path

from kernel.config.base import Settings
from kernel.config.fields import setting

TLS_CA_ENV = "LIVEMESH_TLS_CA"
TLS_CERT_ENV = "LIVEMESH_TLS_CERT"
TLS_KEY_ENV = "LIVEMESH_TLS_KEY"
CREDENTIAL_KEY_FILE_ENV = "LIVEMESH_CREDENTIAL_KEY_FILE"
CREDENTIAL_PUBLIC_KEY_ENV = "LIVEMESH_CREDENTIAL_PUBLIC_KEY"
NODE_CREDENTIAL_ENV = "LIVEMESH_NODE_CREDENTIAL"


class TlsSettings(Settings):
    """Mutual TLS on every gRPC hop: all three files, or none (plaintext)."""

    tls_ca: Path | None = setting(
        None, env=TLS_CA_ENV, help="the CA bundle trusted on gRPC hops (PEM)"
    )
    tls_cert: Path | None = setting(
        None, env=TLS_CERT_ENV, help="this process's certificate chain (PEM)"
    )
    tls_key: Path | None = setting(None, env=TLS_KEY_ENV, help="that certificate's key (PEM)")


class CredentialSettings(Settings):
    """The key operator, node and service credentials are signed and verified with."""

    credential_key_file: Path | None = setting(
        None,
        env=CREDENTIAL_KEY_FILE_ENV,
        secret=True,
        help="the Ed25519 private key (PEM) credentials are minted with; a server given "
        "only this verifies with its public half",
    )
    credential_public_key: str | None = setting(
        None,
        env=CREDENTIAL_PUBLIC_KEY_ENV,
        help="the Ed25519 public key (PEM text) credentials are verified with",
    )


class NodeCredentialSettings(Settings):
    """What a cache node presents to the registry on every call."""

    node_credential: str | None = setting(
        None,
        env=NODE_CREDENTIAL_ENV,
        secret=True,
        help="this node's credential (a JWT naming it; livemesh admin token --role node)",
    )
