"""Service identity on every gRPC hop: mutual TLS (DESIGN.md §6).

A process with TLS settings (:func:`tls_settings` of :class:`kernel.config.TlsSettings`: a
CA bundle, its certificate and its key) serves only TLS and requires a client certificate
from that CA, and every channel it opens presents its own certificate and trusts only
that CA. Without settings, everything stays plaintext (a service run alone, the unit
tests).

Rotation without a restart: the server side re-reads the files when their stat
signature changes, checked by gRPC before each new connection's handshake
(``grpc.dynamic_ssl_server_credentials``); new client channels use the files as they
are when the channel is made. Connections already up keep the identity they shook
hands with, and a channel already made keeps presenting its first certificate when it
reconnects (gRPC python has no reloading channel credentials), until it is closed.
Rotate by replacing the files (write aside, then rename): a rotation caught half-way (a
new certificate beside the old key) keeps the last good files until it completes. To
change CA, trust both (the CA file is a bundle) until every process has the new one.

:class:`PrivateCA` is the embedded default's: a CA and a certificate per process, made
at stack start in a private temporary directory that is deleted at exit.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kernel.config import TlsSettings, load
from kernel.config.trust import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV

log = logging.getLogger(__name__)

CA_ENV, CERT_ENV, KEY_ENV = TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV
# as long as the demo's signed URLs: a stack outliving it would fail its handshakes
DEMO_LIFETIME = datetime.timedelta(days=1)
CLOCK_SKEW = datetime.timedelta(minutes=5)

T = TypeVar("T")


@dataclass(frozen=True)
class TlsPaths:
    """Where one process's TLS files are: the CA bundle it trusts, its chain and its key."""

    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        """The settings that hand these paths to a child process."""
        return {CA_ENV: str(self.ca), CERT_ENV: str(self.cert), KEY_ENV: str(self.key)}


def tls_settings(environ: Mapping[str, str] | None = None) -> TlsPaths | None:
    """The process's TLS files: its :class:`TlsSettings` (read from ``environ`` when given)
    as :func:`tls_paths`."""
    return tls_paths(load(TlsSettings, environ=environ).settings)


def tls_paths(settings: TlsSettings) -> TlsPaths | None:
    """The TLS files of loaded ``settings``: all three, or none (plaintext); one alone is an
    error rather than a silent fall back to plaintext."""
    ca, cert, key = settings.tls_ca, settings.tls_cert, settings.tls_key
    given = {CA_ENV: ca, CERT_ENV: cert, KEY_ENV: key}
    missing = [name for name, path in given.items() if path is None]
    if len(missing) == len(given):
        return None
    if ca is None or cert is None or key is None:
        raise ValueError(f"TLS needs {', '.join(missing)} as well")
    return TlsPaths(ca, cert, key)


TlsOption = TlsPaths | Literal["settings"] | None


def chosen(tls: TlsOption) -> TlsPaths | None:
    """What a server or channel factory uses: ``"settings"`` (their default) the process's
    own (:func:`tls_settings`), None plaintext."""
    return tls_settings() if isinstance(tls, str) else tls


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes of one consistent read of the files."""

    ca: bytes
    cert: bytes
    key: bytes


def read_material(paths: TlsPaths) -> TlsMaterial:
    """Read and check the files: every PEM parses and the key is the certificate's (a rotation
    caught half-way, new certificate and old key, is refused rather than served)."""
    material = TlsMaterial(paths.ca.read_bytes(), paths.cert.read_bytes(), paths.key.read_bytes())
    x509.load_pem_x509_certificates(material.ca)
    leaf = x509.load_pem_x509_certificates(material.cert)[0]
    key = serialization.load_pem_private_key(material.key, password=None)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise ValueError(f"{paths.key} is not the key of {paths.cert}")
    return material


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signature(paths: TlsPaths) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is replaced or rewritten: inode, size, mtime."""
    stats = [os.stat(p) for p in (paths.ca, paths.cert, paths.key)]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class Reloading(Generic[T]):
    """``make(material)`` made again only when the files' signature changes (gRPC calls the
    server's fetcher before every handshake: a stat of three files, not a parse)."""

    def __init__(self, paths: TlsPaths, make: Callable[[TlsMaterial], T]) -> None:
        self.paths = paths
        self.make = make
        self._lock = threading.Lock()  # the server's fetcher runs on gRPC's own threads
        self._seen: tuple[tuple[tuple[int, int, int], ...], T] | None = None

    def get(self) -> tuple[T, bool]:
        """The current value and whether it is new since the last call: the last good one
        while the files do not read or check (a rotation caught half-way)."""
        with self._lock:
            try:
                signature = _signature(self.paths)
                if self._seen is not None and self._seen[0] == signature:
                    return self._seen[1], False
                value = self.make(read_material(self.paths))
            except (OSError, ValueError, TypeError) as exc:
                if self._seen is None:
                    raise
                log.warning("TLS files not reloaded, the last good ones kept: %s", exc)
                return self._seen[1], False
            self._seen = (signature, value)
            return value, True


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(material.ca, material.key, material.cert)


def _server_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.ca)


def server_credentials(paths: TlsPaths) -> grpc.ServerCredentials:
    """TLS only, a client certificate from the CA required, the files re-read on change."""
    files = Reloading(paths, _server_configuration)
    initial, _ = files.get()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        configuration, changed = files.get()
        if changed:
            log.info("TLS files reloaded from %s", paths.cert)
        return configuration if changed else None

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=True)


class PrivateCA:
    """A throwaway CA and a certificate per process (ECDSA P-256, valid ``lifetime``), in a
    private temporary directory (0700, keys 0600) that :meth:`close` deletes."""

    def __init__(
        self, lifetime: datetime.timedelta = DEMO_LIFETIME, directory: Path | None = None
    ) -> None:
        """``directory``: where the files go (made here, 0700; it must not exist), else a
        new temporary one."""
        self.lifetime = lifetime
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="livemesh-tls-"))
        else:
            directory.mkdir(mode=0o700)
            self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "livemesh private CA")])
        self._cert = (
            _builder(self._name, self._name, self._key.public_key(), lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = self.directory / "ca.crt"
        self.ca_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._issued: dict[str, TlsPaths] = {}

    def issue(self, name: str) -> TlsPaths:
        """``name``'s files (made once): SAN ``name``, localhost and 127.0.0.1, for serving and
        for calling (every process is a client of another)."""
        if name in self._issued:
            return self._issued[name]
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        san = x509.SubjectAlternativeName(
            [
                x509.DNSName(name),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
        )
        cert = (
            _builder(subject, self._name, key.public_key(), self.lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(san, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        paths = TlsPaths(
            self.ca_path, self.directory / f"{name}.crt", self.directory / f"{name}.key"
        )
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(
            paths.key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self._issued[name] = paths
        return paths

    def close(self) -> None:
        """Delete the directory, keys and all (``contextlib.closing`` makes it a context)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    lifetime: datetime.timedelta,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 (never readable by others, not even between open and chmod)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
