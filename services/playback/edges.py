"""The operator's view of the edges (``ListEdges``): each edge's registry record beside its
players' QoE, window by window, and what press play and steering make of it.

The windows are the QoE processor's own per-second sums (``lm:{qoe}:sec:{start}``, kept for
:data:`~services.qoe.consumer.WINDOWS_KEPT` windows of the length it publishes in
``lm:{qoe}:window_s``) added up window by window, turned into figures by the same
function that scores them, so the console shows what steering decided on, and still
shows an edge's last minutes once its players have left (its health record outlives
its last window by three windows only).
Read when asked (an operator's page), not in the background as press play's verdict is;
an unreachable Redis answers UNAVAILABLE rather than an edge list that looks as if nobody
watched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from kernel.keys import QOE_WINDOW_S, qoe_second
from livemesh.playback.v1 import playback_pb2 as pb
from livemesh.registry.v1 import registry_pb2
from services.playback.qoe_demotion import Verdict, instance_edge
from services.qoe.aggregate import Figures, edges, figures, window_sums
from services.qoe.consumer import WINDOWS_KEPT


def qoe_state(name: str, verdict: Verdict) -> pb.QoeState:
    if name in verdict.demoted:
        return pb.QOE_STATE_DEMOTED
    if name in verdict.probation:
        return pb.QOE_STATE_PROBATION
    return pb.QOE_STATE_HEALTHY


def window_message(start_s: int, window_s: int, f: Figures) -> pb.QoeWindow:
    window = pb.QoeWindow(
        seconds=window_s,
        requests=f.requests,
        score=f.score,
        rebuffer_ratio=f.rebuffer_ratio,
        startup_ms=f.startup_ms,
        error_rate=f.error_rate,
        bitrate_kbps=f.bitrate_kbps,
    )
    window.start_time.FromSeconds(start_s)
    return window


async def _window_s(redis: aioredis.Redis) -> int | None:
    """The processors' window length (None: none ran for as long as windows are kept)."""
    found = await redis.get(QOE_WINDOW_S)
    text = found.decode() if isinstance(found, bytes) else found or ""
    return int(text) if text.isdigit() and int(text) > 0 else None


async def qoe_windows(
    redis: aioredis.Redis, names: Sequence[str], now_s: int
) -> dict[str, list[pb.QoeWindow]]:
    """Each edge's (QoE event name) whole windows still kept, oldest first."""
    found: dict[str, list[pb.QoeWindow]] = {name: [] for name in names}
    window_s = await _window_s(redis) if names else None
    if window_s is None:
        return found
    last = now_s // window_s * window_s - window_s  # the newest window that has ended
    # the oldest kept window may have begun to expire: one fewer is shown
    starts = [last - i * window_s for i in reversed(range(WINDOWS_KEPT - 1))]
    pipe = redis.pipeline(transaction=False)
    for second in range(starts[0], last + window_s):
        pipe.hgetall(qoe_second(second))
    seconds = await pipe.execute()
    for i, start in enumerate(starts):
        sums = window_sums(seconds[i * window_s : (i + 1) * window_s])
        for name, f in edges(figures(sums).items()).items():
            if name in found:
                found[name].append(window_message(start, window_s, f))
    return found


def edge_list(
    instances: Sequence[registry_pb2.Instance],
    windows: Mapping[str, list[pb.QoeWindow]],
    verdict: Verdict,
) -> pb.ListEdgesResponse:
    return pb.ListEdgesResponse(
        edges=[
            pb.Edge(
                instance=instance,
                qoe_state=qoe_state(instance.name, verdict),
                qoe_windows=windows.get(instance_edge(instance.name), []),
            )
            for instance in instances
        ]
    )
