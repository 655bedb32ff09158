"""The node's counters, exposed on ``/metrics`` through prometheus_client.

The hit path only adds to plain integers (:class:`Counters`, the upstream's
``UpstreamStats``): no lock, no metric object per request.  A custom collector
reads them when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.upstream import UpstreamStats

Read = Callable[[], float]


@dataclass
class Counters:
    requests: int = 0
    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    collapsed: int = 0  # requests that joined a fill already in flight
    token_rejections: int = 0
    bad_requests: int = 0
    bytes_out: int = 0
    prepositioned: int = 0


HELP = {
    "requests": "HTTP requests answered",
    "hits": "requests served from a fresh cached object",
    "stale_hits": "requests served stale while the object revalidates",
    "misses": "requests that started an upstream fill",
    "collapsed": "requests that joined an upstream fill already in flight",
    "token_rejections": "requests refused for a bad or expired token",
    "bad_requests": "requests refused as malformed",
    "bytes_out": "body bytes sent to clients",
    "prepositioned": "objects filled by the pre-positioning endpoint",
}
# metric name (livemesh_edge_upstream_<name>_total) → its UpstreamStats field and help
UPSTREAM = {
    "fetches": ("fetches", "attempts sent to a parent"),
    "errors": ("errors", "attempts that failed"),
    "failovers": ("failovers", "attempts after a failed one for the same object"),
    "holds_expired": ("holds_expired", "held requests whose hold ran out at the parent"),
    "resumed": ("resumed", "attempts that continued a body already started"),
    "replaced": ("replaced", "fills cut because upstream's copy changed under them"),
    "bytes": ("bytes_in", "body bytes received from parents"),
}
GAUGES = {
    "cache_bytes": "bytes of objects in the cache",
    "qoe_events_sent": "player QoE events sent to Redis",
    "qoe_events_dropped": "player QoE events dropped (ring full or Redis failing)",
    "cmcd_pairs_dropped": "CMCD key=value pairs refused as malformed or unknown",
    "cache_max_bytes": "the cache's size limit in bytes",
    "cache_objects": "objects in the cache",
    "cache_evictions": "objects evicted from the cache so far",
    "inflight_fills": "upstream fills in flight",
    "connections": "open client connections",
    "draining": "1 while the node drains",
}


class NodeCollector(Collector):
    """Reads the node's counters, upstream stats and ``gauges`` at each scrape."""

    def __init__(
        self,
        node: str,
        counters: Counters,
        upstream: UpstreamStats,
        gauges: dict[str, Read],
    ) -> None:
        self.node = node
        self.counters = counters
        self.upstream = upstream
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        node = self.node
        for f in fields(self.counters):
            metric = CounterMetricFamily(f"livemesh_edge_{f.name}", HELP[f.name], labels=["node"])
            metric.add_metric([node], getattr(self.counters, f.name))
            yield metric
        for name, (attr, doc) in UPSTREAM.items():
            metric = CounterMetricFamily(f"livemesh_edge_upstream_{name}", doc, labels=["node"])
            metric.add_metric([node], getattr(self.upstream, attr))
            yield metric
        per_parent = CounterMetricFamily(
            "livemesh_edge_upstream_parent_fetches",
            "attempts sent to each parent",
            labels=["node", "parent"],
        )
        for parent, count in self.upstream.per_parent.items():
            per_parent.add_metric([node, parent], count)
        yield per_parent
        for name, read in self.gauges.items():
            gauge = GaugeMetricFamily(f"livemesh_edge_{name}", GAUGES[name], labels=["node"])
            gauge.add_metric([node], read())
            yield gauge


def registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry of the node's own metrics only (not the process-wide default one)."""
    own = CollectorRegistry(auto_describe=False)
    own.register(collector)
    return own
