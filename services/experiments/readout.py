"""Per-cell figures with their intervals, the guardrails' verdict, the sample-ratio check:
pure functions of an experiment and its counts (:mod:`.cellqoe`).

Units: the sample-ratio check counts exposed accounts (the unit allocated). The QoE
figures count requests, the unit the QoE stream has: requests of one session are not
independent, so their intervals are narrower than a per-session analysis would give.
A guardrail acts only on a cell whose interval lies wholly above the threshold, so noise
alone does not stop an experiment.
"""

from __future__ import annotations

from collections.abc import Mapping

from livemesh.experiments.v1 import experiments_pb2 as pb
from services.experiments import stats
from services.experiments.cellqoe import CellQoe, cell_qoe

METRIC_NAMES = {
    pb.GUARDRAIL_METRIC_REBUFFER_RATIO: "rebuffer_ratio",
    pb.GUARDRAIL_METRIC_STARTUP_MS: "startup_ms",
    pb.GUARDRAIL_METRIC_ERROR_RATE: "error_rate",
}


def _estimate(cell: stats.Interval, delta: stats.Interval, samples: int) -> pb.Estimate:
    return pb.Estimate(
        value=cell.value,
        low=cell.low,
        high=cell.high,
        samples=samples,
        delta=delta.value,
        delta_low=delta.low,
        delta_high=delta.high,
    )


def estimates(cell: CellQoe, control: CellQoe) -> dict[str, pb.Estimate]:
    """The cell's QoE figures, each with its difference from the control's."""
    rebuffer = (cell.starved, cell.requests), (control.starved, control.requests)
    errors = (cell.errors, cell.requests), (control.errors, control.requests)
    return {
        "rebuffer_ratio": _estimate(
            stats.wilson(*rebuffer[0]),
            stats.proportion_delta(rebuffer[1], rebuffer[0]),
            cell.requests,
        ),
        "error_rate": _estimate(
            stats.wilson(*errors[0]), stats.proportion_delta(errors[1], errors[0]), cell.requests
        ),
        "startup_ms": _estimate(
            stats.mean_interval(cell.startup),
            stats.welch_delta(control.startup, cell.startup),
            cell.startup.n,
        ),
    }


def breach(experiment: pb.Experiment, counts: Mapping[str, str]) -> str | None:
    """Why a guardrail stops ``experiment`` now, or None."""
    control = cell_qoe(counts, experiment.cells[0].name)
    for cell in experiment.cells:
        found = estimates(cell_qoe(counts, cell.name), control)
        for rail in experiment.guardrails:
            name = METRIC_NAMES[rail.metric]
            figure = found[name]
            if figure.samples >= rail.min_samples and figure.low > rail.threshold:
                return (
                    f"guardrail: cell {cell.name} {name} {figure.value:.4g} "
                    f"(95% [{figure.low:.4g}, {figure.high:.4g}], n={figure.samples}) "
                    f"above {rail.threshold:g}"
                )
    return None


def readout(
    experiment: pb.Experiment, counts: Mapping[str, str], accounts: Mapping[str, int]
) -> pb.GetReadoutResponse:
    """The readout of ``experiment`` from its counts and exposed accounts per cell."""
    weights = [c.weight for c in experiment.cells]
    units = [accounts.get(c.name, 0) for c in experiment.cells]
    total_units, total_weight = sum(units), sum(weights)
    control = cell_qoe(counts, experiment.cells[0].name)
    out = pb.GetReadoutResponse(experiment=experiment)
    for cell, n in zip(experiment.cells, units, strict=True):
        qoe = cell_qoe(counts, cell.name)
        found = estimates(qoe, control)
        out.cells.append(
            pb.CellReadout(
                cell=cell.name,
                weight=cell.weight,
                accounts=n,
                exposures=qoe.exposures,
                expected_share=cell.weight / total_weight,
                observed_share=n / total_units if total_units else 0.0,
                rebuffer_ratio=found["rebuffer_ratio"],
                startup_ms=found["startup_ms"],
                error_rate=found["error_rate"],
            )
        )
    srm = stats.sample_ratio(units, weights)
    out.sample_ratio.CopyFrom(
        pb.SampleRatio(chi_square=srm.chi_square, p_value=srm.p_value, mismatch=srm.mismatch)
    )
    return out
