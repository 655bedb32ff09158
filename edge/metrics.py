"""The node's counters, rendered in the Prometheus text format on ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields


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


def render(
    name: str,
    counters: Counters,
    gauges: dict[str, Callable[[], float]],
    upstream: dict[str, float],
    per_parent: dict[str, int],
) -> bytes:
    lines: list[str] = []
    for f in fields(counters):
        metric = f"livemesh_edge_{f.name}_total"
        lines += [
            f"# HELP {metric} {HELP[f.name]}",
            f"# TYPE {metric} counter",
            f'{metric}{{node="{name}"}} {getattr(counters, f.name)}',
        ]
    for key, value in upstream.items():
        metric = f"livemesh_edge_upstream_{key}_total"
        lines += [f"# TYPE {metric} counter", f'{metric}{{node="{name}"}} {value}']
    metric = "livemesh_edge_upstream_parent_fetches_total"
    lines.append(f"# TYPE {metric} counter")
    lines += [f'{metric}{{node="{name}",parent="{p}"}} {n}' for p, n in per_parent.items()]
    for key, getter in gauges.items():
        metric = f"livemesh_edge_{key}"
        lines += [f"# TYPE {metric} gauge", f'{metric}{{node="{name}"}} {getter()}']
    return ("\n".join(lines) + "\n").encode()
