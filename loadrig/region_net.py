"""Regions as Linux network namespaces on this machine (issue 17): each region's shield and
edges run in a namespace of their own, joined to the host's namespace (where the origin
and the viewers are) by a veth pair, so what crosses between a region and the origin
crosses a network interface, and one region cannot reach the other's nodes at all.

Region ``i`` gets the point-to-point subnet ``10.201.i.0/30``: ``.1`` on the host's side
(where the origin listens for it), ``.2`` inside (where its nodes listen). Needs root with
CAP_SYS_ADMIN and CAP_NET_ADMIN (``ip netns add``); :func:`available` says whether this
machine allows it, and why not.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "lm"  # namespace and interface names start with it (interface names: 15 bytes)


class RegionNetError(RuntimeError):
    """An ``ip`` command failed; the message is its command line and stderr."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RegionNetError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class RegionNet:
    region: str  # e.g. eu-west
    index: int  # 1..254: the subnet 10.201.index.0/30

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.region}"

    @property
    def host_ip(self) -> str:
        """The host's end: where the origin answers this region."""
        return f"10.201.{self.index}.1"

    @property
    def region_ip(self) -> str:
        """The region's end: where its shield and edges listen."""
        return f"10.201.{self.index}.2"

    @property
    def _host_link(self) -> str:
        return f"{PREFIX}h{self.index}"

    @property
    def _region_link(self) -> str:
        return f"{PREFIX}r{self.index}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the region's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def create(self) -> RegionNet:
        """The namespace, its loopback up, and the veth pair addressed at both ends."""
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self._host_link, "type", "veth", "peer", "name", self._region_link)
            _ip("link", "set", self._region_link, "netns", self.netns)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self._host_link)
            _ip("link", "set", self._host_link, "up")
            inside = ("netns", "exec", self.netns, "ip")
            _ip(*inside, "addr", "add", f"{self.region_ip}/30", "dev", self._region_link)
            _ip(*inside, "link", "set", self._region_link, "up")
            _ip(*inside, "link", "set", "lo", "up")
        except RegionNetError:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        """Remove the namespace (its end of the pair goes with it, and so the host's)."""
        subprocess.run(["ip", "link", "del", self._host_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


def available() -> str | None:
    """None if namespaces and veth pairs can be made here, else what failed."""
    probe = RegionNet("probe", 254)
    try:
        probe.create()
    except (RegionNetError, FileNotFoundError) as error:
        return str(error)
    probe.delete()
    return None
