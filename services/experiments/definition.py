"""An experiment's definition as a request gives it, checked and normalised: every bad
field is INVALID_ARGUMENT naming it."""

from __future__ import annotations

import math
import secrets
import time

from kernel.rpc import validate
from kernel.rpc.errors import InvalidArgument
from livemesh.experiments.v1 import experiments_pb2 as pb

MIN_CELLS, MAX_CELLS = 2, 10
MAX_WEIGHT = 10_000
MAX_VALUE_LEN = 200
MAX_GUARDRAILS = 10
DEFAULT_MIN_SAMPLES = 100
# ceilings a proportion's threshold must stay within
PROPORTIONS = {pb.GUARDRAIL_METRIC_REBUFFER_RATIO, pb.GUARDRAIL_METRIC_ERROR_RATE}


def _cells(given: pb.Experiment) -> list[pb.Cell]:
    if not MIN_CELLS <= len(given.cells) <= MAX_CELLS:
        raise InvalidArgument("experiment.cells", f"must list {MIN_CELLS}-{MAX_CELLS} cells")
    seen: set[str] = set()
    cells = []
    for i, cell in enumerate(given.cells):
        name = validate.resource_id(cell.name, f"experiment.cells[{i}].name")
        if name in seen:
            raise InvalidArgument(f"experiment.cells[{i}].name", f"{name!r} appears twice")
        seen.add(name)
        if not 1 <= cell.weight <= MAX_WEIGHT:
            raise InvalidArgument(f"experiment.cells[{i}].weight", f"must be 1-{MAX_WEIGHT}")
        if len(cell.value) > MAX_VALUE_LEN or any(ord(c) < 32 for c in cell.value):
            raise InvalidArgument(
                f"experiment.cells[{i}].value",
                f"at most {MAX_VALUE_LEN} characters, no control characters",
            )
        cells.append(pb.Cell(name=name, weight=cell.weight, value=cell.value))
    return cells


def _guardrails(given: pb.Experiment) -> list[pb.Guardrail]:
    if len(given.guardrails) > MAX_GUARDRAILS:
        raise InvalidArgument("experiment.guardrails", f"at most {MAX_GUARDRAILS}")
    out = []
    for i, rail in enumerate(given.guardrails):
        field = f"experiment.guardrails[{i}]"
        if rail.metric not in pb.GuardrailMetric.values() or not rail.metric:
            raise InvalidArgument(f"{field}.metric", "must name a metric")
        if not math.isfinite(rail.threshold) or rail.threshold < 0:
            raise InvalidArgument(f"{field}.threshold", "must be a finite number, at least 0")
        if rail.metric in PROPORTIONS and rail.threshold >= 1:
            raise InvalidArgument(f"{field}.threshold", "a ratio's ceiling is below 1")
        if rail.min_samples < 0:
            raise InvalidArgument(f"{field}.min_samples", "must not be negative")
        out.append(
            pb.Guardrail(
                metric=rail.metric,
                threshold=rail.threshold,
                min_samples=rail.min_samples or DEFAULT_MIN_SAMPLES,
            )
        )
    return out


def defined(experiment_id: str, given: pb.Experiment) -> pb.Experiment:
    """The DRAFT experiment ``given`` defines, with a new salt."""
    out = pb.Experiment(
        name=f"experiments/{experiment_id}",
        display_name=validate.text(given.display_name, "experiment.display_name", 1, 100),
        decision=validate.resource_id(given.decision, "experiment.decision"),
        salt=secrets.token_hex(16),
        state=pb.EXPERIMENT_STATE_DRAFT,
    )
    out.cells.extend(_cells(given))
    out.guardrails.extend(_guardrails(given))
    out.create_time.FromNanoseconds(time.time_ns())
    return out


def same_definition(a: pb.Experiment, b: pb.Experiment) -> bool:
    """Whether ``a`` and ``b`` define the same experiment (salt, state and times aside):
    a repeated CreateExperiment is answered with the one made first."""
    return (a.display_name, a.decision, list(a.cells), list(a.guardrails)) == (
        b.display_name,
        b.decision,
        list(b.cells),
        list(b.guardrails),
    )
