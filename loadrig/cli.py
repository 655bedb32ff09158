"""``livemesh loadtest``: run a spike scenario against the stack, replay a request log, or
print the scale model.

    livemesh loadtest run fight-night [--out DIR] [--viewers 0.1] [--time 0.5] [--attach PID]
    livemesh loadtest check SCENARIO.toml
    livemesh loadtest replay LOG --target URL [--speed 10] [--rebase MPD_URL]
    livemesh loadtest scale [--viewers 65e6] [--mix v720=0.5,v480=0.3,v360=0.2] [...]
                            [--region-share eu-west=0.6,us-east=0.4 [--no-failover]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from command.experiments import operator_token
from kernel.config import (
    ConfigError,
    ExperimentsSettings,
    LoadtestSettings,
    add_flags,
    given_flags,
    load,
)
from kernel.rpc import credentials
from loadrig.chaos import ChaosRunner, stack_processes
from loadrig.experiment import Access, ExperimentRun
from loadrig.regions import format_regions, plan_regions
from loadrig.replay import parse_log, rebase, replay, requests_per_object, schedule
from loadrig.report import draw_progress, progress_line, terminal_summary, write_report
from loadrig.results import summarise
from loadrig.scale import Capacity, EventShape, format_plan, parse_mix, plan
from loadrig.scenario import Scenario
from loadrig.scenario_file import ScenarioError, load_scenario
from loadrig.scheduler import RunState, run_scenario
from loadrig.stack import RigStack

PASSWORD = "loadrig correct horse battery"
SIGNUP_CONCURRENCY = 4
SIGNUP_ATTEMPTS = 8
SIGNUP_BACKOFF_S = 0.2  # doubled after every refusal


class SignUpRefused(Exception):
    """The gateway could not take a sign-up now (overloaded, or out of time: 429, 503,
    504), or the sign-in after a 409 failed: worth another try."""

    def __init__(self, status: int, answer: object) -> None:
        super().__init__(f"{status} {answer}")


async def sign_up(
    http: aiohttp.ClientSession, gateway: str, gate: asyncio.Semaphore, email: str
) -> str:
    """One account's access token: signed up, or signed in if an earlier attempt got
    through after its deadline (409)."""
    body = {"email": email, "password": PASSWORD, "displayName": email.split("@")[0]}
    async with gate, http.post(f"{gateway}/v1/accounts:signUp", json=body) as resp:
        answer = await resp.json(content_type=None)
    if resp.status == 200:
        return str(answer["accessToken"])
    if resp.status == 409:
        signin = {"email": email, "password": PASSWORD}
        async with gate, http.post(f"{gateway}/v1/accounts:signIn", json=signin) as r:
            answer = await r.json(content_type=None)
        if r.status == 200:
            return str(answer["accessToken"])
    elif resp.status not in (429, 503, 504):
        raise SystemExit(f"loadtest: sign-up failed: {resp.status} {answer}")
    raise SignUpRefused(resp.status, answer)


async def create_accounts(gateway: str, count: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Sign up ``count`` viewer accounts; their access tokens and credentials."""
    run = secrets.token_hex(4)
    creds = [(f"viewer-{run}-{i}@loadrig.example.org", PASSWORD) for i in range(count)]
    gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)  # argon2 is slow by design: a few at a time
    one = AsyncRetrying(  # the limiter said: come back later
        stop=stop_after_attempt(SIGNUP_ATTEMPTS),
        wait=wait_exponential(multiplier=SIGNUP_BACKOFF_S),
        retry=retry_if_exception_type(SignUpRefused),
        reraise=True,
    ).wraps(sign_up)
    async with aiohttp.ClientSession() as http:
        try:
            tokens = await asyncio.gather(*(one(http, gateway, gate, email) for email, _ in creds))
        except SignUpRefused as exc:
            raise SystemExit(f"loadtest: sign-up failed: {exc}") from exc
    return list(tokens), creds


def attached_gateway(root: int) -> str:
    for proc in stack_processes(root):
        if proc.argv[0] == "gateway":
            return f"http://127.0.0.1:{proc.option('--port') or 8000}"
    raise SystemExit(f"loadtest: no gateway process below pid {root}")


def attached_experiments() -> Access:
    """The attached stack's experiment service as ``livemesh experiments`` reaches it: the
    configured target and TLS, an operator credential (``LIVEMESH_OPERATOR_TOKEN``, else
    minted with the configured credential key)."""
    try:
        target = load(ExperimentsSettings).settings.experiments_target
        return Access(target, operator_token(None))
    except (credentials.MissingKey, ConfigError) as exc:
        raise SystemExit(f"loadtest: the scenario's experiment: {exc}") from exc


def _progress(scenario: Scenario) -> Any:
    def draw(state: RunState, t: float, collector: Any) -> None:
        last = state.series[-1] if state.series else {"viewers": 0, "playing": 0, "stalled": 0}
        points = collector.origin_requests[-2:]
        rps = 0.0
        if len(points) == 2 and points[1][0] > points[0][0]:
            rps = (points[1][1] - points[0][1]) / (points[1][0] - points[0][0])
        draw_progress(
            progress_line(
                t,
                scenario.duration_s,
                last["viewers"],
                scenario.viewers_at(t),
                last["playing"],
                last["stalled"],
                rps,
            )
        )

    return draw


async def run_test(
    scenario: Scenario,
    out: Path,
    gateway: str,
    root: int,
    faults: str | None,
    origin_log: Path | None,
    settings: LoadtestSettings,
    progress: bool,
    experiments: Access | None = None,
) -> dict[str, Any]:
    """One run against a started stack; the results document (also written to ``out``).
    A scenario's experiment runs on the experiment service at ``experiments``."""
    workers = settings.workers
    tokens, creds = await create_accounts(gateway, scenario.player.accounts)
    async with contextlib.AsyncExitStack() as running:
        experiment = None
        if scenario.experiment is not None:
            if experiments is None or not experiments.target:
                raise SystemExit("loadtest: the scenario has an experiment; no experiment service")
            experiment_id = f"{scenario.name}-{secrets.token_hex(3)}"
            run = ExperimentRun(scenario.experiment, experiments, experiment_id)
            experiment = await running.enter_async_context(run)
        chaos = ChaosRunner(root, faults)
        try:
            state, collector, t0 = await run_scenario(
                scenario,
                gateway,
                tokens,
                creds,
                chaos,
                root,
                workers,
                _progress(scenario) if progress else None,
                settings.uvloop,
            )
        finally:
            chaos.close()
        readout = await experiment.readout() if experiment is not None else None
    t_end = time.time()
    wanted = {o.rsplit(".", 1)[0] for o in state.objects}
    per_object: dict[str, int] = {}
    if origin_log is not None and origin_log.exists():
        counted = requests_per_object(
            parse_log(origin_log.read_text(errors="replace").splitlines()), t0 - 5, t_end
        )
        per_object = {k: counted.get(k, 0) for k in wanted}
    metrics = collector.as_dict()
    summary = summarise(state.players, state.series, per_object, metrics, state.loop_lag_ms)
    results: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "duration_s": scenario.duration_s,
        "workers": workers or os.cpu_count(),
        "started_at": t0,
        "labels": scenario.labels(),
        "chaos": [e.__dict__ for e in chaos.log],
        "summary": summary,
        "series": state.series,
        "metrics": metrics,
        "players": state.players,
    }
    if readout is not None:
        results["experiment"] = readout
    cap = summary["capacity"]
    if cap["edge_viewers_per_core"] > 0:
        measured = Capacity(
            edge_viewers_per_core=cap["edge_viewers_per_core"],
            shield_requests_per_core=cap["shield_requests_per_core"] or 20_000,
        )
        event = EventShape()
        results["scale"] = format_plan(event, measured, plan(event, measured))
    write_report(results, out)
    return results


def cmd_run(args: argparse.Namespace) -> int:
    settings = load(LoadtestSettings, given_flags(LoadtestSettings, args)).settings
    scenario = load_scenario(args.scenario).scaled(args.viewers, args.time)
    out = args.out or Path("loadtest-results") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"loadtest: {scenario.name}, {scenario.duration_s:.0f} s, peak "
        f"{scenario.peak_viewers} viewers; report in {out}",
        flush=True,
    )
    if args.attach:
        gateway = args.gateway or attached_gateway(args.attach)
        experiments = attached_experiments() if scenario.experiment is not None else None
        results = asyncio.run(
            run_test(
                scenario,
                out,
                gateway,
                args.attach,
                settings.faults_file,
                None,
                settings,
                True,
                experiments,
            )
        )
    else:
        with RigStack(out / "logs") as stack:
            print(f"loadtest: stack up, gateway {stack.gateway}", flush=True)
            results = asyncio.run(
                run_test(
                    scenario,
                    out,
                    stack.gateway,
                    os.getpid(),
                    stack.faults_file,
                    out / "logs" / "origin.log",
                    settings,
                    True,
                    stack.experiments(),
                )
            )
    print(terminal_summary(results))
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    print(
        f"{scenario.name}: {scenario.duration_s:.0f} s, peak {scenario.peak_viewers} viewers, "
        f"{len(scenario.phases)} phases, {len(scenario.chaos)} chaos events"
    )
    for t, viewers in scenario.breakpoints():
        print(f"  t={t:7.1f} s  {viewers:9.0f} viewers")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    event = EventShape(viewers=int(args.viewers), mix=parse_mix(args.mix), segment_s=args.segment_s)
    cap = Capacity(
        edge_viewers_per_core=args.edge_viewers_per_core,
        edge_cores=args.edge_cores,
        edge_egress_bps=args.edge_egress_gbps * 1e9,
        shield_requests_per_core=args.shield_requests_per_core,
        shield_cores=args.shield_cores,
        shield_egress_bps=args.shield_egress_gbps * 1e9,
        headroom=args.headroom,
        regions=args.regions,
    )
    result = plan(event, cap)
    print(format_plan(event, cap, result))
    summary = result.as_dict()
    if args.region_share:
        regional = plan_regions(event, cap, parse_mix(args.region_share), not args.no_failover)
        print(format_regions(regional))
        summary["regions"] = [r.as_dict() for r in regional]
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    requests = parse_log(Path(args.log).read_text(errors="replace").splitlines())
    planned = schedule(requests, args.speed)
    if args.rebase:
        from loadrig.manifest import parse_manifest

        async def current() -> tuple[str, int, str]:
            async with aiohttp.ClientSession() as http, http.get(args.rebase) as resp:
                mpd = parse_manifest(await resp.text())
            live = int((time.time() - mpd.ast_s) // mpd.segment_s)
            prefix = args.rebase.split("/live/", 1)[0].split("://", 1)[1].split("/", 1)
            return (
                mpd.video.media.split("/", 1)[0],
                live,
                "/" + prefix[1] if len(prefix) > 1 else "",
            )

        epoch, live, prefix = asyncio.run(current())
        numbers = [int(p.rsplit("/", 1)[1].split(".")[0]) for _, p in planned if p.endswith(".m4s")]
        shift = live - min(numbers) if numbers else 0
        planned = [(t, rebase(p, epoch, shift, prefix)) for t, p in planned]
    print(
        f"replay: {len(planned)} requests over {planned[-1][0] if planned else 0:.1f} s "
        f"(x{args.speed:g}) against {args.target}",
        flush=True,
    )
    result = asyncio.run(replay(planned, args.target.rstrip("/")))
    print(
        f"replay: sent {result.sent} in {result.wall_s:.1f} s, statuses "
        f"{dict(result.statuses or {})}, errors {result.errors}, worst lateness "
        f"{result.late_s * 1000:.0f} ms"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livemesh loadtest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario against the stack (started here by default)")
    run.add_argument("scenario", help="a scenario name in loadrig/scenarios/ or a TOML path")
    run.add_argument("--out", type=Path, default=None, help="report directory")
    run.add_argument("--viewers", type=float, default=1.0, help="scale the viewer counts")
    run.add_argument("--time", type=float, default=1.0, help="scale the durations")
    run.add_argument(
        "--attach",
        type=int,
        default=0,
        metavar="PID",
        help="use the stack below this supervisor pid (livemesh demo)",
    )
    run.add_argument("--gateway", default=None, help="with --attach: the gateway URL")
    add_flags(run, LoadtestSettings)  # --workers, --faults-file
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a scenario and print its viewer curve")
    check.add_argument("scenario")
    check.set_defaults(func=cmd_check)
    replay_p = sub.add_parser("replay", help="replay an access log, time-scaled")
    replay_p.add_argument("log", help="access log (the origin's, or any in that format)")
    replay_p.add_argument("--target", required=True, help="base URL, e.g. http://127.0.0.1:8081")
    replay_p.add_argument("--speed", type=float, default=1.0, help="time scale (10: 10x faster)")
    replay_p.add_argument(
        "--rebase",
        default=None,
        metavar="MPD_URL",
        help="move the requests onto this MPD's epoch and live edge",
    )
    replay_p.set_defaults(func=cmd_replay)
    scale = sub.add_parser("scale", help="what an event of this size needs")
    scale.add_argument("--viewers", type=float, default=65e6)
    scale.add_argument("--mix", default="v720=0.5,v480=0.3,v360=0.2")
    scale.add_argument("--segment-s", type=float, default=2.0)
    scale.add_argument("--edge-viewers-per-core", type=float, default=5000)
    scale.add_argument("--edge-cores", type=int, default=32)
    scale.add_argument("--edge-egress-gbps", type=float, default=100)
    scale.add_argument("--shield-requests-per-core", type=float, default=20000)
    scale.add_argument("--shield-cores", type=int, default=32)
    scale.add_argument("--shield-egress-gbps", type=float, default=100)
    scale.add_argument("--headroom", type=float, default=0.3)
    scale.add_argument("--regions", type=int, default=10)
    scale.add_argument(
        "--region-share",
        default="",
        help="viewers per region, e.g. eu-west=0.6,us-east=0.4: size each region",
    )
    scale.add_argument(
        "--no-failover", action="store_true", help="size regions for their own viewers only"
    )
    scale.add_argument("--json", action="store_true")
    scale.set_defaults(func=cmd_scale)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ScenarioError, ConfigError) as exc:
        print(f"livemesh loadtest: {exc}", file=sys.stderr)
        return 2
    return result
