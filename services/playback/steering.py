"""Edge ranking for a viewer: pure, so it is tested without sockets.

Order: region proximity (same region, then same area, e.g. ``eu-*``, then anywhere),
then health (SERVING first), then content (edges that already serve the channel,
so their cache is hot), then load (lowest first), then name (stable).
"""

from __future__ import annotations

from collections.abc import Sequence

from livemesh.registry.v1 import registry_pb2


def region_distance(client_region: str, edge_region: str) -> int:
    if not client_region or client_region == edge_region:
        return 0
    if client_region.split("-", 1)[0] == edge_region.split("-", 1)[0]:
        return 1
    return 2


def rank_edges(
    edges: Sequence[registry_pb2.Instance], client_region: str, content: str
) -> list[registry_pb2.Instance]:
    """``edges`` best first for a viewer in ``client_region`` asking for ``content``."""

    def key(edge: registry_pb2.Instance) -> tuple[int, int, int, float, str]:
        return (
            region_distance(client_region, edge.region),
            0 if edge.health == registry_pb2.HEALTH_SERVING else 1,
            0 if content in edge.content else 1,
            edge.load,
            edge.name,
        )

    return sorted(edges, key=key)
