"""Automated canary analysis (pure): compare a canary's calls with the baseline's over the
same window and say continue, promote or roll back.

Each version's figures are what its own server measured (``livemesh_rpc_served*``: a
count per status code and a latency histogram), taken since the canary started:

- **errors**: Fisher's exact test, one-sided (is the canary's failure share greater?).
  It is the exact form of the two-proportion test; the z-test's normal approximation is
  wrong at the handful of calls a canary at 0.5 % gets in its first seconds, which is
  exactly when a bad version must be caught.
- **latency**: the Mann-Whitney U test, one-sided (does the canary's latency lie above
  the baseline's?), on the histogram's samples (each call at its bucket's bound: the
  test is rank-based, so bucketing only makes ties, which its tie correction handles),
  with the common-language effect size ``P(canary slower) + P(tie) / 2`` as a floor so
  that a difference too small to matter is not a regression however many calls show it.

The analysis looks again every interval, so the overall false-alarm rate ``alpha`` is
split over the most looks it may take (Bonferroni): a good canary is rolled back by
chance with probability at most ``alpha`` however long it runs. A canary that gets too few
calls to judge within its time is rolled back: no evidence is not a pass.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# status codes that count against a version (the resilience layer's FAILURES; a shed
# call, RESOURCE_EXHAUSTED, is the server protecting itself, a caller's mistake is not
# the server's, and CANCELLED is a caller that left, a hedge's loser)
FAILURE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "DATA_LOSS"})
NOT_COUNTED = frozenset({"CANCELLED"})


class Verdict(enum.Enum):
    CONTINUE = "continue"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Window:
    """One version's calls over the analysis window."""

    codes: Mapping[str, int]  # calls by final status code name
    buckets: Sequence[int]  # calls per latency bucket (not cumulative), last one +Inf

    @property
    def calls(self) -> int:
        return sum(n for code, n in self.codes.items() if code not in NOT_COUNTED)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code in FAILURE_CODES)


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01  # overall false-alarm rate, split over max_looks
    max_looks: int = 60
    min_judge_calls: int = 5  # the canary calls a test needs before it may fail the canary
    min_pass_calls: int = 30  # and before it may pass
    min_pass_s: float = 10.0
    error_margin: float = 0.01  # a failure share at most this much above the baseline's is fine
    latency_effect: float = 0.6  # P(canary slower) + ties/2 at or below this is fine


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    reason: str
    error_p: float | None = None
    latency_p: float | None = None
    latency_effect: float | None = None


def error_test(baseline: Window, canary: Window) -> float:
    """One-sided p-value that the canary fails more often than the baseline."""
    table = [
        [canary.errors, canary.calls - canary.errors],
        [baseline.errors, baseline.calls - baseline.errors],
    ]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def samples(window: Window, bounds: Sequence[float]) -> np.ndarray:
    """The window's calls as latencies at their bucket's upper bound (the +Inf bucket at
    twice the last finite bound: only its rank matters)."""
    values = [*bounds, bounds[-1] * 2]
    return np.repeat(np.asarray(values[: len(window.buckets)]), np.asarray(window.buckets))


def latency_test(baseline: Window, canary: Window, bounds: Sequence[float]) -> tuple[float, float]:
    """One-sided Mann-Whitney p-value that the canary is slower, and the effect size
    ``U / (n_canary · n_baseline)``."""
    ours, theirs = samples(canary, bounds), samples(baseline, bounds)
    result = stats.mannwhitneyu(ours, theirs, alternative="greater", method="asymptotic")
    return float(result.pvalue), float(result.statistic) / (len(ours) * len(theirs))


def analyse(
    baseline: Window,
    canary: Window,
    bounds: Sequence[float],
    elapsed_s: float,
    look: int,
    limits: Thresholds = Thresholds(),
) -> Analysis:
    """The verdict at look number ``look`` (from 1), ``elapsed_s`` after the canary started."""
    alpha = limits.alpha / limits.max_looks
    error_p = latency_p = effect = None
    if canary.calls >= limits.min_judge_calls and baseline.calls > 0:
        error_p = error_test(baseline, canary)
        excess = canary.errors / canary.calls - baseline.errors / baseline.calls
        if error_p < alpha and excess > limits.error_margin:
            reason = (
                f"error rate {canary.errors}/{canary.calls} against the baseline's "
                f"{baseline.errors}/{baseline.calls} (p = {error_p:.2g})"
            )
            return Analysis(Verdict.ROLLBACK, reason, error_p)
    if sum(canary.buckets) >= limits.min_judge_calls and sum(baseline.buckets) > 0:
        latency_p, effect = latency_test(baseline, canary, bounds)
        if latency_p < alpha and effect > limits.latency_effect:
            reason = f"latency above the baseline's (p = {latency_p:.2g}, P(slower) = {effect:.2f})"
            return Analysis(Verdict.ROLLBACK, reason, error_p, latency_p, effect)
    if canary.calls >= limits.min_pass_calls and elapsed_s >= limits.min_pass_s:
        reason = f"{canary.calls} canary calls, no regression in errors or latency"
        return Analysis(Verdict.PROMOTE, reason, error_p, latency_p, effect)
    if look >= limits.max_looks:
        reason = f"only {canary.calls} canary calls in {look} looks: too few to judge"
        return Analysis(Verdict.ROLLBACK, reason, error_p, latency_p, effect)
    return Analysis(Verdict.CONTINUE, "collecting", error_p, latency_p, effect)


def share(baseline: Window, canary: Window) -> float:
    """The canary's share of all calls the two versions served."""
    total = baseline.calls + canary.calls
    return canary.calls / total if total else math.nan
