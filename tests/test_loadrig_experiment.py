"""``livemesh loadtest run live-delay-experiment`` against the real stack on loopback, cut
short: the rig starts a live-delay experiment, its viewers press play and get cells whose
latency they hold, the QoE stream carries their sessions' figures to the cells, and the
report shows the experiment service's readout (loadrig/scenarios/live-delay-experiment.toml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack_helpers import run_loadtest

CELL_DELAY_S = {"control": 1.0, "fast": 0.5}  # the scenario's cells, as viewers hold them


@pytest.mark.timeout(300)
def test_an_experiments_viewers_get_cells_and_the_report_reads_each_cells_qoe(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    # cut to 25 s and 30 viewers, each playing as an account of its own
    results = run_loadtest(
        "live-delay-experiment", out, "--time", "0.5", "--viewers", "0.5", timeout_s=280
    )
    readout = results["experiment"]["readout"]
    stdout = results["stdout"]
    detail = f"{readout}\n{results['summary']}\n{stdout[-1500:]}"

    assert readout["experiment"]["name"].startswith("experiments/live-delay-experiment-")
    assert readout["experiment"]["decision"] == "live-delay"
    cells = {c["cell"]: c for c in readout["cells"]}
    assert list(cells) == ["control", "fast"], detail  # the control first
    # each viewer played as account (index mod accounts) and held its cell's latency: the
    # accounts the readout counts per cell are those of the viewers holding its delay
    accounts = 30
    for name, delay in CELL_DELAY_S.items():
        held = {p["index"] % accounts for p in results["players"] if p["buffer_target_s"] == delay}
        assert held, f"no viewer held {delay} s\n{detail}"
        assert int(cells[name]["accounts"]) == len(held), detail
        # the QoE stream carried the cell's sessions' requests, stalls and startups
        assert int(cells[name]["rebuffer_ratio"]["samples"]) > 0, detail
        assert int(cells[name]["startup_ms"]["samples"]) > 0, detail
        assert 0 <= cells[name]["rebuffer_ratio"].get("value", 0.0) <= 1, detail
    # the allocation's check: weights 1:1 over the exposed accounts, no mismatch
    assert "p_value" in readout["sample_ratio"], detail
    assert not readout["sample_ratio"].get("mismatch", False), detail

    # the report: the readout's table, as `livemesh experiments readout` prints it
    assert "experiment (GetReadout)" in stdout, stdout[-3000:]
    assert "sample ratio: chi2=" in stdout
    page = (out / "report.html").read_text()
    assert "rebuffer ratio [95%]" in page
