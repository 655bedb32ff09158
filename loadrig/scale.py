"""The scale model: from measured per-node capacity to what a 65-million-viewer event needs.

Pure arithmetic, every step kept as a printable line (:attr:`ScalePlan.steps`).

Model (DESIGN.md §5, §8):
- **Edges** serve viewers.  An edge node holds ``edge_viewers_per_core * edge_cores``
  viewers, and at most ``edge_egress_bps / mean viewer bitrate`` by its NIC; the smaller
  wins.  Nodes needed = viewers / per-node, plus ``headroom`` (N+x for failures and the
  surge).
- Every edge fetches every object of every rung once from its shield (one upstream
  fetch per object per node), so a **shield**'s egress per edge is the whole ladder's
  bitrate, and its request rate per edge is ``rungs / D`` segments plus the manifest.
  Shields needed = edges / edges-per-shield (by NIC and by request rate), at least one
  per region.
- The **origin** sees one fetch per object per shield: ``shields * (rungs / D + MPD)``
  requests per second and ``shields * ladder bitrate`` of egress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_LADDER: dict[str, int] = {  # kernel/channel_config.py's default ladder, bits per second
    "v720": 2_500_000,
    "v480": 1_200_000,
    "v360": 600_000,
    "a128": 128_000,
}
DEFAULT_MIX: dict[str, float] = {"v720": 0.5, "v480": 0.3, "v360": 0.2}
AUDIO_PREFIX = "a"


@dataclass(frozen=True)
class Capacity:
    """Per-node capacity (measured on this machine per core, scaled to a production node)."""

    edge_viewers_per_core: float = 5_000.0
    edge_cores: int = 32
    edge_egress_bps: float = 100e9
    shield_requests_per_core: float = 20_000.0
    shield_cores: int = 32
    shield_egress_bps: float = 100e9
    headroom: float = 0.3  # spare capacity on every tier
    regions: int = 10  # at least one shield per region


@dataclass(frozen=True)
class EventShape:
    viewers: int = 65_000_000
    ladder: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LADDER))
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))  # video rungs
    segment_s: float = 2.0
    manifest_refresh_s: float = 1.0  # edge/shield MPD revalidation period


@dataclass
class ScalePlan:
    mean_bitrate_bps: float = 0.0
    viewer_egress_bps: float = 0.0
    edges: int = 0
    shields: int = 0
    edge_to_shield_bps: float = 0.0
    shield_requests_per_s: float = 0.0
    origin_requests_per_s: float = 0.0
    origin_egress_bps: float = 0.0
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


def _rate(bps: float) -> str:
    for unit, scale in (("Tb/s", 1e12), ("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:,.2f} {unit}"
    return f"{bps:,.0f} b/s"


def plan(event: EventShape, cap: Capacity) -> ScalePlan:
    """What ``event`` needs given per-node ``cap``; every figure with its arithmetic."""
    if abs(sum(event.mix.values()) - 1.0) > 1e-6:
        raise ValueError(f"rung mix must add up to 1, got {sum(event.mix.values()):g}")
    for rung in event.mix:
        if rung not in event.ladder:
            raise ValueError(f"rung {rung!r} of the mix is not in the ladder")
    out = ScalePlan()
    s = out.steps
    audio = sum(bw for r, bw in event.ladder.items() if r.startswith(AUDIO_PREFIX))
    video = sum(share * event.ladder[r] for r, share in event.mix.items())
    out.mean_bitrate_bps = video + audio
    terms = " + ".join(f"{share:g}*{_rate(event.ladder[r])}" for r, share in event.mix.items())
    s.append(
        f"mean viewer bitrate = {terms} (video) + {_rate(audio)} (audio) "
        f"= {_rate(out.mean_bitrate_bps)}"
    )
    out.viewer_egress_bps = event.viewers * out.mean_bitrate_bps
    s.append(
        f"edge egress = {event.viewers:,} viewers * {_rate(out.mean_bitrate_bps)} "
        f"= {_rate(out.viewer_egress_bps)}"
    )

    by_cpu = cap.edge_viewers_per_core * cap.edge_cores
    by_nic = cap.edge_egress_bps / out.mean_bitrate_bps
    per_edge = min(by_cpu, by_nic)
    s.append(
        f"viewers per edge = min({cap.edge_viewers_per_core:,.0f}/core * {cap.edge_cores} "
        f"cores = {by_cpu:,.0f}, {_rate(cap.edge_egress_bps)} / "
        f"{_rate(out.mean_bitrate_bps)} = {by_nic:,.0f}) = {per_edge:,.0f}"
    )
    out.edges = math.ceil(event.viewers / per_edge * (1 + cap.headroom))
    s.append(
        f"edges = ceil({event.viewers:,} / {per_edge:,.0f} * (1 + {cap.headroom:g} "
        f"headroom)) = {out.edges:,}"
    )

    ladder_bps = sum(event.ladder.values())
    rungs = len(event.ladder)
    per_edge_rps = rungs / event.segment_s + 1 / event.manifest_refresh_s
    s.append(
        f"each edge pulls the whole ladder once: {_rate(ladder_bps)} and {rungs} rungs / "
        f"{event.segment_s:g} s + 1 MPD / {event.manifest_refresh_s:g} s "
        f"= {per_edge_rps:g} req/s from its shield"
    )
    edges_by_nic = cap.shield_egress_bps / ladder_bps
    edges_by_rps = cap.shield_requests_per_core * cap.shield_cores / per_edge_rps
    per_shield = min(edges_by_nic, edges_by_rps)
    s.append(
        f"edges per shield = min({_rate(cap.shield_egress_bps)} / {_rate(ladder_bps)} = "
        f"{edges_by_nic:,.0f}, {cap.shield_requests_per_core:,.0f} req/s/core * "
        f"{cap.shield_cores} cores / {per_edge_rps:g} = {edges_by_rps:,.0f}) "
        f"= {per_shield:,.0f}"
    )
    needed = math.ceil(out.edges / per_shield * (1 + cap.headroom))
    out.shields = max(cap.regions, needed)
    s.append(
        f"shields = max({cap.regions} regions, ceil({out.edges:,} / {per_shield:,.0f} * "
        f"(1 + {cap.headroom:g}))) = {out.shields:,}"
    )
    out.edge_to_shield_bps = out.edges * ladder_bps
    out.shield_requests_per_s = out.edges * per_edge_rps
    s.append(
        f"shield tier egress = {out.edges:,} edges * {_rate(ladder_bps)} = "
        f"{_rate(out.edge_to_shield_bps)}; requests = {out.edges:,} * {per_edge_rps:g} = "
        f"{out.shield_requests_per_s:,.0f}/s"
    )
    out.origin_requests_per_s = out.shields * per_edge_rps
    out.origin_egress_bps = out.shields * ladder_bps
    s.append(
        f"origin = {out.shields:,} shields * {per_edge_rps:g} req/s = "
        f"{out.origin_requests_per_s:,.0f} req/s; egress {out.shields:,} * "
        f"{_rate(ladder_bps)} = {_rate(out.origin_egress_bps)}"
    )
    return out


def format_plan(event: EventShape, cap: Capacity, result: ScalePlan) -> str:
    head = (
        f"scale model: {event.viewers:,} viewers, ladder "
        + ", ".join(f"{r} {_rate(bw)}" for r, bw in event.ladder.items())
        + ", mix "
        + ", ".join(f"{r} {share:.0%}" for r, share in event.mix.items())
    )
    return "\n".join([head, *(f"  {line}" for line in result.steps)])


def parse_mix(text: str) -> dict[str, float]:
    """``"v720=0.5,v480=0.3,v360=0.2"`` as a mix."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        rung, _, share = part.partition("=")
        if not share:
            raise ValueError(f"mix entry {part!r}: write rung=share")
        out[rung.strip()] = float(share)
    return out
