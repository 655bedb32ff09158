"""Loopback listen ports chosen before the listener binds them.

A port asked of the kernel with ``bind(port 0)`` and closed again is an ephemeral one: the
next ``bind(0)`` or outgoing ``connect()`` of any process may be handed the same number
before its intended listener binds it (CI saw a gRPC server lose its port to a metrics
listener that bound port 0). Ports here are taken below Linux's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768 and up by default), are never handed out twice
while reserved in this process, and are probed free before they are handed out.
"""

from __future__ import annotations

import random
import socket

LISTEN_PORTS = range(12000, 21000)  # free_port()'s; FFmpeg's private RTMP listeners use 21000+


class NoFreePort(OSError):
    """Every port of a pool is reserved here or bound by someone else."""


class PortPool:
    """Loopback ports for listeners: reserved here, probed free, given back.

    The walk starts at ``start`` (an index into ``ports``), so that two processes that
    draw from the same range do not offer each other the same sequence."""

    def __init__(self, ports: range, start: int = 0) -> None:
        self.ports = ports
        self.in_use: set[int] = set()
        self._next = start % len(ports)

    def reserve(self) -> int:
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            if port not in self.in_use and _bindable(port):
                self.in_use.add(port)
                return port
        raise NoFreePort(f"no port free in {self.ports.start}-{self.ports.stop - 1}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False  # someone else's
        return True


_LISTENERS = PortPool(LISTEN_PORTS, start=random.randrange(len(LISTEN_PORTS)))


def free_port() -> int:
    """A loopback port for a listener about to start: free now, outside the ephemeral range,
    and not handed out before by this process."""
    return _LISTENERS.reserve()
