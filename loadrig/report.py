"""The report: ``results.json``, ``report.html`` with plots (and the plots as PNGs), the
one-screen terminal summary, and the progress bar drawn during a run."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from loadrig.player_record import STARTUP_STEPS
from loadrig.results import RIG_LAG_WARN_MS

BAR_WIDTH = 30
STEP_NAMES = {
    "press": "press-play wait",
    "mpd": "MPD (and clock sync)",
    "init": "init segments",
    "first_segment": "first segment",
}


def progress_line(
    t: float,
    duration: float,
    viewers: int,
    target: int,
    playing: int,
    stalled: int,
    origin_rps: float,
) -> str:
    """``[#####.....]  45%  t=27s/60s  viewers 312/400 ...`` (pure)."""
    share = min(1.0, max(0.0, t / duration)) if duration else 1.0
    filled = round(share * BAR_WIDTH)
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:4.0%}  t={t:4.0f}s/"
        f"{duration:.0f}s  viewers {viewers}/{target}  playing {playing}  stalled "
        f"{stalled}  origin {origin_rps:.0f} req/s"
    )


def draw_progress(line: str) -> None:
    width = shutil.get_terminal_size((120, 20)).columns
    sys.stdout.write("\r" + line[: width - 1].ljust(width - 1))
    sys.stdout.flush()


def _mark_chaos(ax: Any, results: dict[str, Any]) -> None:
    for event in results.get("chaos", []):
        ax.axvline(event["at_s"], color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(
            f"{event['action']} {event['target']}",
            (event["at_s"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="tab:red",
        )
    for at, label in results.get("labels", []):
        ax.axvline(at, color="tab:gray", linestyle=":", linewidth=1)
        ax.annotate(
            label,
            (at, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="tab:gray",
        )


# Request rates are averaged over a segment's duration: counters sampled once a second
# against requests that come once a segment (2 s) read as a zigzag between 0 and twice
# the rate.
RATE_WINDOW_S = 2.0


def rates(
    series: list[list[float]], window_s: float = RATE_WINDOW_S
) -> tuple[list[float], list[float]]:
    """Per-second rates of a counter series ``[(t, count), ...]``, each over the last
    ``window_s`` (or the longest span the samples allow); a counter reset reads as 0."""
    ts, out = [], []
    start = 0
    for t1, v1 in series[1:]:
        while start + 1 < len(series) and t1 - series[start + 1][0] >= window_s:
            start += 1
        t0, v0 = series[start]
        if t1 > t0:
            ts.append(t1)
            out.append(max(0.0, (v1 - v0) / (t1 - t0)))
    return ts, out


def figures(results: dict[str, Any]) -> dict[str, Figure]:
    series = results["series"]
    metrics = results["metrics"]
    summary = results["summary"]
    out: dict[str, Figure] = {}

    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    ax = axes[0]
    t = [row["t"] for row in series]
    ax.plot(t, [row["target"] for row in series], color="tab:gray", linestyle=":", label="scenario")
    ax.plot(t, [row["viewers"] for row in series], label="viewers")
    ax.plot(t, [row["playing"] for row in series], label="playing")
    ax.plot(t, [row["stalled"] for row in series], label="stalled", color="tab:red")
    ax.set_ylabel("viewers")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{results['scenario']}: viewers over time")
    lag_ax = ax.twinx()  # the rig's own lateness, on its own scale
    lag_ax.plot(t, [row.get("rig_lag_ms", 0.0) for row in series], color="tab:olive",
                linewidth=0.7, label="rig loop lag")  # fmt: skip
    lag_ax.set_ylabel("rig loop lag (ms)", color="tab:olive", fontsize=8)
    lag_ax.legend(loc="upper right", fontsize=8)
    _mark_chaos(ax, results)
    ax = axes[1]
    ot, orate = rates(metrics["origin_requests"])
    ax.plot(ot, orate, label="origin", color="tab:purple")
    for name, node_series in sorted(metrics["node_requests"].items()):
        nt, nrate = rates(node_series)
        ax.plot(nt, nrate, label=name, linewidth=0.8)
    ax.set_yscale("symlog")
    ax.set_ylabel(f"requests / s ({RATE_WINDOW_S:g} s average)")
    ax.set_xlabel("seconds into the run")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("requests reaching the origin, the shield and the edges")
    _mark_chaos(ax, results)
    fig.tight_layout()
    out["timeline"] = fig

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    names = ["p50", "p90", "p99", "max"]
    for ax, key, unit, title in (
        (axes[0], "startup_s", "s", "startup time"),
        (axes[1], "latency_s", "s", "live latency"),
        (axes[2], "ttfb_ms", "ms", "segment TTFB"),
    ):
        values = [summary[key][n] for n in names]
        ax.bar(names, [0 if math.isnan(v) else v for v in values], color="tab:blue")
        for i, v in enumerate(values):
            ax.annotate(
                f"{v:.3g}", (i, 0 if math.isnan(v) else v), ha="center", va="bottom", fontsize=8
            )
        ax.set_title(f"{title} ({unit})")
    fig.tight_layout()
    out["percentiles"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    stalls = [s for p in results["players"] for s in p["stalls"]]
    ax = axes[0]
    ax.hist(stalls or [0.0], bins=30, color="tab:red")
    ax.set_title(f"stalls: {len(stalls)} (longest {summary['stalls']['longest_s']} s)")
    ax.set_xlabel("stall duration (s)")
    ax = axes[1]
    errors = summary["errors"]
    labels = list(errors)[:8] or ["none"]
    ax.barh(labels, [errors.get(k, 0) for k in labels], color="tab:orange")
    ax.set_title("errors by kind")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    out["stalls_errors"] = fig
    out["startup_cdf"] = startup_cdf(results["players"])
    return out


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    """The empirical CDF of ``values``: sorted values and the share at or below each."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def startup_cdf(players: list[dict[str, Any]]) -> Figure:
    """Startup time and each of its causes as CDFs over the viewers that started: where a
    slow start came from (waiting for press-play, the MPD, the init segments or the first
    segment) shows as the curve that stretches right with the total."""
    started = [p for p in players if p.get("startup_s") is not None]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    if started:
        xs, ys = cdf([p["startup_s"] for p in started])
        ax.step(xs, ys, where="post", color="black", linewidth=2, label="startup (total)")
        parts = [p["startup_parts"] for p in started if p.get("startup_parts")]
        for step in STARTUP_STEPS:
            if parts:
                xs, ys = cdf([part[step] for part in parts])
                ax.step(xs, ys, where="post", label=STEP_NAMES[step])
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of viewers that started")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"startup by cause: CDF over {len(started)} viewers")
    fig.tight_layout()
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """``results.json``, one PNG per figure and ``report.html``; the HTML's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    images = []
    for name, fig in figures(results).items():
        data = _png(fig)
        (out_dir / f"{name}.png").write_bytes(data)
        images.append(
            f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        )
    text = html.escape(terminal_summary(results))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8">
<title>livemesh load test: {html.escape(results["scenario"])}</title>
<style>body{{font-family:sans-serif;max-width:1250px;margin:auto}}img{{max-width:100%}}
pre{{background:#f4f4f4;padding:1em}}</style></head>
<body><h1>livemesh load test: {html.escape(results["scenario"])}</h1>
<p>{html.escape(results.get("description", ""))}</p>
{"".join(images)}
<h2>Summary</h2><pre>{text}</pre>
<p>Raw figures: <a href="results.json">results.json</a></p></body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path


def rig_line(rig: dict[str, Any] | None) -> str:
    """The rig's check on itself: how late its workers' loops woke."""
    if not rig:
        return "rig self-check: not measured"
    lag = rig["loop_lag_ms"]
    verdict = (
        "the figures are the system's"
        if rig["trustworthy"]
        else "the rig itself was late: its delays are in the stalls, latency and TTFB above"
    )
    return (
        f"rig self-check: worker loop lag p50 {lag['p50']} ms  p99 {lag['p99']} ms  "
        f"max {lag['max']} ms ({rig['late_share'] * 100:.1f} % of wakes later than "
        f"{RIG_LAG_WARN_MS:.0f} ms): {verdict}"
    )


def startup_parts_line(parts: dict[str, dict[str, float]]) -> str:
    """``  by cause (p50 / p99 s): press-play wait 0.2 / 1.1, MPD ...``"""
    shown = [
        f"{STEP_NAMES[step]} {parts[step]['p50']} / {parts[step]['p99']}"
        for step in STARTUP_STEPS
        if step in parts
    ]
    return "  by cause (p50 / p99 s): " + (", ".join(shown) or "not recorded")


def terminal_summary(results: dict[str, Any]) -> str:
    s = results["summary"]
    st, lat, tt, dl = s["startup_s"], s["latency_s"], s["ttfb_ms"], s["delivery_ms"]
    stalls, fo, opo = s["stalls"], s["failovers"], s["origin_per_object"]
    cap = s["capacity"]
    lines = [
        f"scenario {results['scenario']}: {results['duration_s']:.0f} s, peak {s['peak_viewers']} "
        f"viewers, {s['players']} players ({s['started']} started, {s['failed']} failed), "
        f"{results['workers']} worker processes",
        f"startup      p50 {st['p50']} s  p90 {st['p90']} s  p99 {st['p99']} s  max {st['max']} s",
        startup_parts_line(s.get("startup_parts_s", {})),
        f"live latency p50 {lat['p50']} s  p90 {lat['p90']} s  p99 {lat['p99']} s  "
        f"max {lat['max']} s",
        f"chunk delivery (prft -> player) p50 {dl['p50']} ms  p99 {dl['p99']} ms",
        f"segment TTFB p50 {tt['p50']} ms  p99 {tt['p99']} ms  max {tt['max']} ms",
        f"stalls       {stalls['count']} in {stalls['players_with_stalls']} players, total "
        f"{stalls['total_s']} s, longest {stalls['longest_s']} s, longer than the buffer: "
        f"{stalls['longer_than_buffer']}",
        f"failovers    {fo['total']} by {fo['players']} players ({fo['then_played']} played on);"
        f" gap to the next edge's first chunk p50 {fo['gap_s']['p50']} s max "
        f"{fo['gap_s']['max']} s; stalled at it max {fo['stall_s']['max']} s, longer than "
        f"the buffer: {fo['stalls_longer_than_buffer']}",
        f"rung switches {s['switches']}; segments per rung {s['rung_segments']}",
        f"origin requests per object: max {opo['max']}, mean {opo['mean']} over "
        f"{opo['objects']} objects ({opo['histogram']})",
        f"errors       {s['errors'] or 'none'}",
        f"measured: {cap['edge_viewers_per_core']} viewers per edge core, "
        f"{cap['shield_requests_per_core']} shield req/s per core",
        rig_line(s.get("rig")),
    ]
    for event in results.get("chaos", []):
        lines.append(
            f"chaos t={event['at_s']:.1f}s {event['action']} {event['target']}: {event['detail']}"
        )
    if results.get("experiment"):
        lines.append(experiment_lines(results["experiment"]))
    if results.get("scale"):
        lines.append(results["scale"])
    return "\n".join(lines)


def experiment_lines(experiment: dict[str, Any]) -> str:
    """The scenario's experiment as the experiment service read it out: allocation per
    cell, each cell's QoE with its interval, the sample-ratio check."""
    return "experiment (GetReadout)\n" + experiment["table"]
