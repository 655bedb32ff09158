"""Edge ranking for a viewer: pure, so it is tested without sockets.

Order: demoted for QoE last (:mod:`.qoe_demotion`: its viewers stall or fail there, which
a farther edge that plays beats), then region proximity (same region, then same area,
e.g. ``eu-*``, then anywhere), then health (SERVING first), then headroom (an edge at
``SATURATED_LOAD`` or more goes after those below it), then content (edges that already
serve the channel, so their cache is hot), then load (lowest first), then name (stable).

Content affinity is bounded by load, as in consistent hashing with bounded loads: a
channel's viewers fill its hot edges up to ``SATURATED_LOAD`` and then spill to the
next, whose cache warms with them. Unbounded, the first edge to carry a channel got
every later viewer of it (the fight-night run put 2,000 viewers on edge-1 while edge-2
idled), whatever its load.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from livemesh.registry.v1 import registry_pb2

SATURATED_LOAD = 0.8  # an edge's heartbeat load (connections / capacity) where it spills
MAX_RANKINGS = 4096  # (region, content) rankings kept for one edge set


def region_distance(client_region: str, edge_region: str) -> int:
    if not client_region or client_region == edge_region:
        return 0
    if client_region.split("-", 1)[0] == edge_region.split("-", 1)[0]:
        return 1
    return 2


def rank_edges(
    edges: Sequence[registry_pb2.Instance],
    client_region: str,
    content: str,
    demoted: Collection[str] = (),
) -> list[registry_pb2.Instance]:
    """``edges`` best first for a viewer in ``client_region`` asking for ``content``;
    the ``demoted`` instance names last."""

    def key(edge: registry_pb2.Instance) -> tuple[bool, int, int, bool, int, float, str]:
        return (
            edge.name in demoted,
            region_distance(client_region, edge.region),
            0 if edge.health == registry_pb2.HEALTH_SERVING else 1,
            edge.load >= SATURATED_LOAD,
            0 if content in edge.content else 1,
            edge.load,
            edge.name,
        )

    return sorted(edges, key=key)


@dataclass(frozen=True, slots=True)
class RankedEdge:
    """What a manifest URL needs of an edge, read once per ranking rather than per call."""

    base: str  # the edge's address without a trailing slash
    name: str
    region: str


def edge_set_key(edges: Sequence[registry_pb2.Instance]) -> tuple[bytes, ...]:
    """Everything a ranking or a manifest URL reads of ``edges``, as one comparable value:
    equal keys rank alike. (The registry answers with new messages on every refresh, so
    the messages' identity says nothing.)"""
    return tuple(
        registry_pb2.Instance(
            name=e.name,
            address=e.address,
            region=e.region,
            health=e.health,
            load=e.load,
            content=e.content,
        ).SerializeToString(deterministic=True)
        for e in edges
    )


class RankingCache:
    """Edge rankings by (region, content), made once per edge set and reused by every
    viewer of an event until the set changes (an edge added, gone, or its health, load,
    content or address changed, or the QoE demotions did): press play then costs a dict
    lookup, not a sort.

    The set is compared by :func:`edge_set_key` only when the registry's answer is a new
    list (about once a second), not per call."""

    def __init__(self, max_entries: int = MAX_RANKINGS) -> None:
        self.max_entries = max_entries
        self._list: Sequence[registry_pb2.Instance] | None = None
        self._key: tuple[bytes, ...] | None = None
        self._demoted: frozenset[str] = frozenset()
        self._ranked: dict[tuple[str, str], list[RankedEdge]] = {}

    def ranked(
        self,
        edges: Sequence[registry_pb2.Instance],
        region: str,
        content: str,
        demoted: frozenset[str] = frozenset(),
    ) -> list[RankedEdge]:
        """``edges`` best first for a viewer in ``region`` asking for ``content``, the
        ``demoted`` last."""
        if edges is not self._list:
            key = edge_set_key(edges)
            if key != self._key:
                self._key, self._ranked = key, {}
            self._list = edges
        if demoted != self._demoted:
            self._demoted, self._ranked = demoted, {}
        found = self._ranked.get((region, content))
        if found is None:
            if len(self._ranked) >= self.max_entries:
                self._ranked.clear()
            found = self._ranked[region, content] = [
                RankedEdge(e.address.rstrip("/"), e.name, e.region)
                for e in rank_edges(edges, region, content, demoted)
            ]
        return found
