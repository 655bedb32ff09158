"""mTLS on the gRPC hops: a real server with TLS on takes only clients with a certificate
from its CA, picks up rotated files on the next connection without a restart, and the
embedded stack (``livemesh demo``) runs every hop on its own private CA."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import stat
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.server import RunningServer, start_server
from kernel.rpc.tls import CA_ENV, CERT_ENV, KEY_ENV, PrivateCA, TlsPaths, tls_settings
from tests.stack_helpers import ROOT, demo_stack, process_env, stack_process


@pytest.fixture
def ca() -> Iterator[PrivateCA]:
    with closing(PrivateCA()) as made:
        yield made


@pytest.fixture
def other_ca() -> Iterator[PrivateCA]:
    with closing(PrivateCA()) as made:
        yield made


def copy_files(source: TlsPaths, directory: Path) -> TlsPaths:
    """``source``'s files at paths of their own (what a rotation later replaces)."""
    directory.mkdir(exist_ok=True)
    paths = TlsPaths(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    replace(paths, source)
    return paths


def replace(
    paths: TlsPaths, source: TlsPaths, parts: tuple[str, ...] = ("ca", "cert", "key")
) -> None:
    """Rotate as a secret manager does: write each new file aside, then rename it over."""
    for part in parts:
        target: Path = getattr(paths, part)
        aside = target.with_suffix(".new")
        shutil.copyfile(getattr(source, part), aside)
        os.replace(aside, target)


async def check(factory: RpcChannelFactory, target: str) -> str:
    """The health service's answer through a new channel of ``factory``, or the status code
    the call failed with."""
    async with factory.connect(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def health_check(target: str, tls: TlsPaths | None) -> str:
    """:func:`check` by a client with ``tls``'s files (None: plaintext)."""
    return await check(RpcChannelFactory(layer=None, tls=tls), target)


@pytest.fixture
async def server_files(ca: PrivateCA, tmp_path: Path) -> TlsPaths:
    return copy_files(ca.issue("registry"), tmp_path / "server")


@pytest.fixture
async def server(server_files: TlsPaths) -> AsyncIterator[RunningServer]:
    running = await start_server([], tls=server_files)
    yield running
    await running.stop(0)


async def test_a_client_with_a_certificate_from_the_ca_is_served(
    server: RunningServer, ca: PrivateCA
) -> None:
    assert await health_check(server.target, ca.issue("gateway")) == "SERVING"


async def test_a_plaintext_client_fails_to_connect(server: RunningServer) -> None:
    assert await health_check(server.target, None) == "UNAVAILABLE"


async def test_a_client_with_a_certificate_from_another_ca_fails(
    server: RunningServer, other_ca: PrivateCA
) -> None:
    assert await health_check(server.target, other_ca.issue("gateway")) == "UNAVAILABLE"


async def test_a_client_without_a_certificate_fails(server: RunningServer, ca: PrivateCA) -> None:
    credentials = grpc.ssl_channel_credentials(ca.ca_path.read_bytes())  # trusts, presents none
    async with grpc.aio.secure_channel(server.target, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_rotated_server_files_serve_the_next_connection_without_a_restart(
    server: RunningServer, server_files: TlsPaths, ca: PrivateCA, other_ca: PrivateCA
) -> None:
    assert await health_check(server.target, ca.issue("gateway")) == "SERVING"
    replace(server_files, other_ca.issue("registry"))  # a new CA, a new certificate and key
    assert await health_check(server.target, other_ca.issue("gateway")) == "SERVING"
    assert await health_check(server.target, ca.issue("gateway")) == "UNAVAILABLE"


async def test_a_rotation_caught_half_way_keeps_the_last_good_files(
    server: RunningServer, server_files: TlsPaths, ca: PrivateCA, tmp_path: Path
) -> None:
    client_files = copy_files(ca.issue("gateway"), tmp_path / "client")
    client = RpcChannelFactory(layer=None, tls=client_files)
    assert await check(client, server.target) == "SERVING"
    for files, renewed in ((server_files, "registry-2"), (client_files, "gateway-2")):
        replace(files, ca.issue(renewed), parts=("cert",))  # the new key not there yet
    assert await check(client, server.target) == "SERVING"


async def test_new_channels_present_the_rotated_client_files(
    ca: PrivateCA, other_ca: PrivateCA, tmp_path: Path
) -> None:
    running = await start_server([], tls=other_ca.issue("registry"))
    files = copy_files(ca.issue("gateway"), tmp_path / "client")
    client = RpcChannelFactory(layer=None, tls=files)
    try:
        assert await check(client, running.target) == "UNAVAILABLE"
        replace(files, other_ca.issue("gateway"))
        assert await check(client, running.target) == "SERVING"
    finally:
        await running.stop(0)


def test_settings_are_all_three_paths_or_none() -> None:
    assert tls_settings({}) is None
    given = {CA_ENV: "/c/ca.crt", CERT_ENV: "/c/tls.crt", KEY_ENV: "/c/tls.key"}
    assert tls_settings(given) == TlsPaths(
        Path("/c/ca.crt"), Path("/c/tls.crt"), Path("/c/tls.key")
    )
    with pytest.raises(ValueError, match=KEY_ENV):
        tls_settings({CA_ENV: "/c/ca.crt", CERT_ENV: "/c/tls.crt"})


def test_the_private_ca_issues_short_lived_p256_certificates_with_private_keys() -> None:
    with closing(PrivateCA()) as ca:
        paths = ca.issue("edge-1")
        assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        public_key = cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"edge-1", "localhost"}
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        assert lifetime <= datetime.timedelta(days=1)
    assert not ca.directory.exists()


async def test_a_service_process_serves_only_mtls_with_its_settings(ca: PrivateCA) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "command.cli", "registry", "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, **ca.issue("registry").env()},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            _name, _, target = (await process.stdout.readline()).decode().strip().partition(": ")
        assert await health_check(target, ca.issue("gateway")) == "SERVING"
        assert await health_check(target, None) == "UNAVAILABLE"
    finally:
        process.terminate()
        assert await process.wait() == 0


async def test_the_demo_stack_runs_every_hop_on_its_private_ca() -> None:
    with demo_stack(wait_for=("gateway",)) as stack:
        # the gateway is announced once /readyz saw every service SERVING, over mTLS
        with urllib.request.urlopen(stack.announced["gateway"] + "/readyz", timeout=10) as ready:
            assert json.load(ready)["ready"] is True
        registry, args = stack_process(stack.process.pid, "registry")
        target = f"127.0.0.1:{args[args.index('--port') + 1]}"
        own = tls_settings(process_env(registry))
        assert own is not None and own.cert.name == "registry.crt"
        gateway, _ = stack_process(stack.process.pid, "gateway")
        assert await health_check(target, tls_settings(process_env(gateway))) == "SERVING"
        assert await health_check(target, None) == "UNAVAILABLE"
    assert not own.ca.parent.exists()  # the keys went with the stack


def test_the_topology_hands_each_process_its_own_files(ca: PrivateCA) -> None:
    from kernel.supervise import DEFAULT_TOPOLOGY, load_topology

    topology = load_topology(DEFAULT_TOPOLOGY, "redis://127.0.0.1:1", free_ports=True, ca=ca)
    certs = {spec.name: spec.env[CERT_ENV] for spec in topology.processes}
    assert certs["playback"] == str(ca.issue("playback").cert)
    assert len(set(certs.values())) == len(certs)
    assert all(spec.env[CA_ENV] == str(ca.ca_path) for spec in topology.processes)
