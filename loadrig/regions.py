"""The scale model across regions, active-active (DESIGN.md §8, deploy/k8s/README.md).

Each region serves its share of the viewers and is sized, from the same measured per-node
capacity as the single plan (:func:`loadrig.scale.plan`), for the worst single loss of
another region: the lost region's viewers move to the survivors in proportion to their
shares, so region ``r`` then carries ``share_r / (1 - share_f)`` of the event, ``f`` the
largest other region. Each region has its own shields and origin (a region's caches never
fetch from another's), so each region's plan is the single plan for its worst load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loadrig.scale import Capacity, EventShape, ScalePlan, plan

SHARE_SLACK = 1e-6


@dataclass(frozen=True)
class RegionPlan:
    name: str
    share: float
    viewers: int  # in normal operation
    worst_viewers: int  # after the worst loss of another region (= viewers without failover)
    lost: str | None  # the region whose loss is that worst case
    plan: ScalePlan  # edges, shields, origin for worst_viewers

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "share": self.share,
            "viewers": self.viewers,
            "worst_viewers": self.worst_viewers,
            "lost": self.lost,
            "edges": self.plan.edges,
            "shields": self.plan.shields,
            "origin_requests_per_s": self.plan.origin_requests_per_s,
        }


def worst_shares(shares: dict[str, float], failover: bool) -> dict[str, tuple[float, str | None]]:
    """Each region's largest share of the viewers and the region whose loss causes it."""
    if abs(sum(shares.values()) - 1.0) > SHARE_SLACK or min(shares.values(), default=0) <= 0:
        raise ValueError(f"region shares must be positive and add up to 1, got {shares}")
    if not failover:
        return {name: (share, None) for name, share in shares.items()}
    if len(shares) < 2:
        raise ValueError("surviving a region's loss needs two regions or more")
    worst: dict[str, tuple[float, str | None]] = {}
    for name, share in shares.items():
        lost = max((other for other in shares if other != name), key=shares.__getitem__)
        worst[name] = (share / (1 - shares[lost]), lost)
    return worst


def plan_regions(
    event: EventShape, cap: Capacity, shares: dict[str, float], failover: bool = True
) -> list[RegionPlan]:
    """Per region, what it needs to carry its worst load given per-node ``cap``."""
    one_region = replace(cap, regions=1)
    plans = []
    for name, (worst, lost) in worst_shares(shares, failover).items():
        worst_viewers = round(event.viewers * worst)
        regional = plan(replace(event, viewers=worst_viewers), one_region)
        viewers = round(event.viewers * shares[name])
        plans.append(RegionPlan(name, shares[name], viewers, worst_viewers, lost, regional))
    return plans


def format_regions(plans: list[RegionPlan]) -> str:
    """One paragraph per region, ending with what its deploy/k8s overlay must allow."""
    lines = ["regions (active-active, each sized for the loss of another):"]
    for p in plans:
        after = f"{p.worst_viewers:,} after {p.lost} is lost" if p.lost else "no failover"
        lines += [
            f"  {p.name}: {p.share:.0%} = {p.viewers:,} viewers; {after}",
            f"    edges {p.plan.edges:,}, shields {p.plan.shields:,}, origin "
            f"{p.plan.origin_requests_per_s:,.1f} req/s",
            f"    deploy/k8s: edge HPA maxReplicas >= {p.plan.edges:,}, "
            f"shield HPA maxReplicas >= {p.plan.shields:,}",
        ]
    total_edges = sum(p.plan.edges for p in plans)
    lines.append(f"  all regions: {total_edges:,} edges, {sum(p.plan.shields for p in plans):,} "
                 "shields")  # fmt: skip
    return "\n".join(lines)
