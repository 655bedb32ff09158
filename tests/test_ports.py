"""Listen ports chosen ahead of their listener: never an ephemeral one, never one twice, never
one somebody holds (CI lost a gRPC server's port to a metrics listener that bound port 0)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kernel.ports import LISTEN_PORTS, NoFreePort, PortPool, free_port


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port in LISTEN_PORTS for port in ports)
    assert not set(ports) & set(ephemeral_range())


def test_a_bound_port_is_skipped_and_a_released_one_comes_back() -> None:
    first = free_port()
    pool = PortPool(range(first, first + 2))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        assert pool.reserve() == first + 1  # first is somebody's
    pool.release(first + 1)
    assert pool.reserve() == first
    assert pool.reserve() == first + 1


def test_an_exhausted_pool_says_so() -> None:
    port = free_port()
    pool = PortPool(range(port, port + 1))
    pool.reserve()
    with pytest.raises(NoFreePort, match="no port free"):
        pool.reserve()
