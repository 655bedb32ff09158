"""``livemesh canary``: a second version of a gRPC service beside its baseline, a small
share of the calls sent to it, automated analysis, and promotion or automatic rollback.

    livemesh canary playback --dependency 127.0.0.1:50057 \\
        --baseline-metrics http://127.0.0.1:9057/metrics --split-file var/split.json

starts ``livemesh playback`` as the canary (on free ports, with this command's environment
and a fault file of its own), adds it to the clients' split (``LIVEMESH_SPLIT_FILE``:
every client process started with it sends ``--weight`` of its calls to the dependency to
the canary, and retries a failed retry-safe call on the baseline), and every
``--interval-s`` compares what each version's own server measured since the canary
started (:mod:`command.canary_analysis`). On a regression the canary leaves the split and
is stopped (exit 1); on a pass it is promoted to a full instance (weight 1) and serves
until the command is stopped (exit 0).

"Versions" here are the same code: ``--bad-error`` / ``--bad-latency-ms`` give the canary
fault rules (:mod:`kernel.rpc.resilience.faults`) that make it a bad version, which is how
the tests and a drill deploy one. Replacing the baseline's image once a canary passes is
the deployment's work (a Kubernetes rollout), not this command's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from command.canary_analysis import Analysis, Thresholds, Verdict, Window, analyse
from kernel.ports import free_port
from kernel.rpc.resilience.faults import FAULTS_FILE_ENV, FaultRule, write_rules
from kernel.rpc.resilience.split import read_split, write_split

log = logging.getLogger("livemesh.canary")

# calls the analysis leaves out: health checks and reflection come from the balancers and
# tools, not from the callers whose experience the canary is judged by
IGNORED_PREFIX = "/grpc."
READY_S = 30.0


@dataclass(frozen=True)
class Plan:
    service: str  # the livemesh sub-command the canary runs (playback, registry, ...)
    dependency: str  # the clients' name for it: the split file's key
    baseline_metrics: str  # the baseline's Prometheus /metrics URL
    split_file: str
    weight: float = 0.005
    interval_s: float = 1.0
    faults: tuple[FaultRule, ...] = ()  # what makes this version bad (none: the same code)
    limits: Thresholds = field(default_factory=Thresholds)
    host: str = "127.0.0.1"


@dataclass
class Canary:
    """The running canary process and where it answers."""

    process: asyncio.subprocess.Process
    address: str
    metrics: str
    workdir: tempfile.TemporaryDirectory[str]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.workdir.cleanup()


@dataclass(frozen=True)
class Outcome:
    analysis: Analysis
    decided_s: float  # from the canary joining the split to the verdict
    removed_s: float | None  # from joining to leaving the split (rollback), None if promoted
    looks: int
    baseline: Window
    canary: Window

    @property
    def verdict(self) -> Verdict:
        return self.analysis.verdict


def read_window(text: str) -> tuple[Window, list[float]]:
    """All callers' calls in a Prometheus exposition (``livemesh_rpc_served*``, less
    :data:`IGNORED_PREFIX`) as one window, and the latency buckets' finite bounds."""
    codes: Counter[str] = Counter()
    cumulative: Counter[float] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            method = sample.labels.get("method", "")
            if method.startswith(IGNORED_PREFIX):
                continue
            if sample.name == "livemesh_rpc_served_total":
                codes[sample.labels["code"]] += int(sample.value)
            elif sample.name == "livemesh_rpc_served_seconds_bucket":
                cumulative[float(sample.labels["le"])] += int(sample.value)
    edges = sorted(cumulative)
    counts = [cumulative[e] - (cumulative[edges[i - 1]] if i else 0) for i, e in enumerate(edges)]
    return Window(dict(codes), counts), [e for e in edges if e != float("inf")]


def since(now: Window, start: Window) -> Window:
    """The calls of ``now`` made after ``start`` (both read from one process)."""
    codes = {c: n - start.codes.get(c, 0) for c, n in now.codes.items()}
    if not start.buckets:
        return Window(codes, list(now.buckets))
    return Window(codes, [n - s for n, s in zip(now.buckets, start.buckets, strict=True)])


async def scrape(session: aiohttp.ClientSession, url: str) -> tuple[Window, list[float]]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        response.raise_for_status()
        return read_window(await response.text())


def set_weight(path: str, dependency: str, address: str, weight: float | None) -> None:
    """Put ``address`` in ``dependency``'s split at ``weight`` (None: take it out), keeping
    the rest of the file."""
    split = read_split(path)
    extra = split.setdefault(dependency, {})
    if weight is None:
        extra.pop(address, None)
    else:
        extra[address] = weight
    write_split(path, split)


async def start_canary(plan: Plan) -> Canary:
    """``livemesh SERVICE`` on free ports with its own fault file; returned once it
    answers (it prints its address when its health service is SERVING)."""
    workdir = tempfile.TemporaryDirectory(prefix="livemesh-canary-")
    faults = str(Path(workdir.name) / "faults.json")
    write_rules(faults, plan.faults)
    metrics_port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "command.cli",
        plan.service,
        "--host",
        plan.host,
        "--port",
        "0",
        "--metrics-port",
        str(metrics_port),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, FAULTS_FILE_ENV: faults},
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(READY_S):
            line = (await process.stdout.readline()).decode().strip()
    except TimeoutError:
        process.kill()
        await process.wait()
        workdir.cleanup()
        raise RuntimeError(f"the canary {plan.service} did not start in {READY_S:.0f} s") from None
    name, _, address = line.partition(": ")
    if name != plan.service:
        await process.wait()
        workdir.cleanup()
        raise RuntimeError(f"the canary {plan.service} did not start (it printed {line!r})")
    metrics = f"http://{plan.host}:{metrics_port}/metrics"
    return Canary(process, address, metrics, workdir)


async def analyse_until_verdict(plan: Plan, canary: Canary) -> Outcome:
    """Put the canary in the split, judge it every interval, and act on the verdict."""
    async with aiohttp.ClientSession() as session:
        base0, _ = await scrape(session, plan.baseline_metrics)
        canary0, _ = await scrape(session, canary.metrics)
        set_weight(plan.split_file, plan.dependency, canary.address, plan.weight)
        joined = time.monotonic()
        log.info("canary %s at weight %g", canary.address, plan.weight)
        look = 0
        while True:
            await asyncio.sleep(plan.interval_s)  # the analysis interval, not a wait for an event
            look += 1
            elapsed = time.monotonic() - joined
            base_now, bounds = await scrape(session, plan.baseline_metrics)
            baseline = since(base_now, base0)
            if canary.process.returncode is not None:
                canary_window = Window({}, [])
                analysis = Analysis(Verdict.ROLLBACK, "the canary process exited")
            else:
                canary_now, _ = await scrape(session, canary.metrics)
                canary_window = since(canary_now, canary0)
                analysis = analyse(baseline, canary_window, bounds, elapsed, look, plan.limits)
            log.info(
                "look %d (%.1f s): %s: %s", look, elapsed, analysis.verdict.value, analysis.reason
            )
            if analysis.verdict is Verdict.ROLLBACK:
                set_weight(plan.split_file, plan.dependency, canary.address, None)
                removed = time.monotonic() - joined
                return Outcome(analysis, elapsed, removed, look, baseline, canary_window)
            if analysis.verdict is Verdict.PROMOTE:
                set_weight(plan.split_file, plan.dependency, canary.address, 1.0)
                return Outcome(analysis, elapsed, None, look, baseline, canary_window)


async def run(plan: Plan) -> tuple[Outcome, Canary]:
    """Start the canary and judge it; a rolled-back canary is already stopped, a promoted
    one is returned running (the caller stops it)."""
    canary = await start_canary(plan)
    try:
        outcome = await analyse_until_verdict(plan, canary)
    except BaseException:
        set_weight(plan.split_file, plan.dependency, canary.address, None)
        await canary.stop()
        raise
    if outcome.verdict is Verdict.ROLLBACK:
        await canary.stop()
    return outcome, canary


def parse(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="livemesh canary", description=__doc__.split("\n")[0])
    parser.add_argument("service", help="the livemesh sub-command to run as the canary")
    parser.add_argument("--dependency", required=True, help="the clients' target for it")
    parser.add_argument("--baseline-metrics", required=True, help="the baseline's /metrics URL")
    parser.add_argument("--split-file", required=True, help="the clients' LIVEMESH_SPLIT_FILE")
    parser.add_argument("--weight", type=float, default=0.005, help="the canary's weight")
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=60.0, help="judged within this, or out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bad-error", default="", help="a bad version: answer this status…")
    parser.add_argument("--bad-error-rate", type=float, default=1.0, help="…to this share")
    parser.add_argument("--bad-latency-ms", type=float, default=0.0, help="a bad version: slow")
    parser.add_argument(
        "--bad-match", default="*", help="the faults' method or gRPC service (default: all)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.weight <= 1:
        parser.error("--weight must be in (0, 1]")
    if args.interval_s <= 0 or args.max_s < args.interval_s:
        parser.error("--interval-s must be positive and no more than --max-s")
    faults: tuple[FaultRule, ...] = ()
    if args.bad_error or args.bad_latency_ms:
        rule = FaultRule(
            match=args.bad_match,
            latency_s=args.bad_latency_ms / 1000,
            error=args.bad_error,
            error_rate=args.bad_error_rate if args.bad_error else 0.0,
        )
        faults = (rule,)
    limits = Thresholds(max_looks=max(1, int(args.max_s / args.interval_s)))
    return Plan(
        args.service,
        args.dependency,
        args.baseline_metrics,
        args.split_file,
        args.weight,
        args.interval_s,
        faults,
        limits,
        args.host,
    )


async def _main(plan: Plan) -> int:
    outcome, canary = await run(plan)
    share = outcome.canary.calls / max(1, outcome.canary.calls + outcome.baseline.calls)
    print(
        f"canary {outcome.verdict.value} after {outcome.decided_s:.1f} s ({outcome.looks} looks): "
        f"{outcome.analysis.reason}; canary share {share:.2%}",
        flush=True,
    )
    if outcome.verdict is Verdict.ROLLBACK:
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"canary {canary.address} promoted (weight 1); stop with Ctrl-C", flush=True)
    await stop.wait()
    set_weight(plan.split_file, plan.dependency, canary.address, None)
    await canary.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    plan = parse(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(plan))
    return 130
