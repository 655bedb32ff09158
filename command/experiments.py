"""``livemesh experiments``: run the experiment service, or manage experiments as an operator.

    livemesh experiments serve [--port N ...]        the service (gRPC)
    livemesh experiments create ID --decision live-delay --display-name "Live delay" \\
        --cell control:1:1000 --cell fast:1:500 --guardrail rebuffer_ratio:0.05
    livemesh experiments start|get|readout ID
    livemesh experiments stop ID --reason "..."
    livemesh experiments list

The operator commands present an operator credential: ``--token`` or
``LIVEMESH_OPERATOR_TOKEN``, else one minted from the configured credential key
(``LIVEMESH_CREDENTIAL_KEY_FILE``), as ``livemesh admin token --role operator`` does.
They reach the service at ``--target`` (default: the settings' ``experiments_target``),
over mTLS when the process's TLS settings are set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from kernel.config import ConfigError, ExperimentsSettings, load
from kernel.rpc import credentials
from kernel.rpc.auth import OPERATOR
from kernel.rpc.clients import RpcChannelFactory
from livemesh.experiments.v1 import experiments_pb2 as pb
from livemesh.experiments.v1 import experiments_pb2_grpc as pb_grpc

TOKEN_ENV = "LIVEMESH_OPERATOR_TOKEN"
METRICS = {
    "rebuffer_ratio": pb.GUARDRAIL_METRIC_REBUFFER_RATIO,
    "startup_ms": pb.GUARDRAIL_METRIC_STARTUP_MS,
    "error_rate": pb.GUARDRAIL_METRIC_ERROR_RATE,
}


def cell(text: str) -> pb.Cell:
    """``name:weight[:value]``."""
    name, _, rest = text.partition(":")
    weight, _, value = rest.partition(":")
    try:
        return pb.Cell(name=name, weight=int(weight), value=value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a cell is name:weight[:value]") from None


def guardrail(text: str) -> pb.Guardrail:
    """``metric:threshold[:min_samples]``."""
    parts = text.split(":")
    try:
        metric = METRICS[parts[0]]
        threshold = float(parts[1])
        min_samples = int(parts[2]) if len(parts) > 2 else 0
    except (KeyError, IndexError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a guardrail is metric:threshold[:min_samples], metric one of "
            + ", ".join(METRICS)
        ) from None
    return pb.Guardrail(metric=metric, threshold=threshold, min_samples=min_samples)


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="livemesh experiments", description=__doc__.splitlines()[0])
    made.add_argument("--target", help="the experiment service, host:port")
    made.add_argument("--token", help=f"operator credential (default: ${TOKEN_ENV}, or minted)")
    commands = made.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the experiment service (its own flags follow)")
    create = commands.add_parser("create", help="define an experiment (DRAFT)")
    create.add_argument("id")
    create.add_argument("--decision", required=True, help="the decision it controls")
    create.add_argument("--display-name", required=True)
    create.add_argument("--cell", type=cell, action="append", required=True,
                        help="name:weight[:value]; the first is the control")  # fmt: skip
    create.add_argument("--guardrail", type=guardrail, action="append", default=[],
                        help="metric:threshold[:min_samples]")  # fmt: skip
    for name in ("start", "get", "readout"):
        commands.add_parser(name, help=f"{name} an experiment").add_argument("id")
    stop = commands.add_parser("stop", help="stop a running experiment")
    stop.add_argument("id")
    stop.add_argument("--reason", required=True)
    commands.add_parser("list", help="list experiments")
    return made


def operator_token(given: str | None) -> str:
    token = given or os.environ.get(TOKEN_ENV)
    if token:
        return token
    return credentials.mint(credentials.signing_key_from_env(), OPERATOR, "cli")


async def call(args: argparse.Namespace, target: str, token: str) -> Any:
    factory = RpcChannelFactory()
    try:
        stub = pb_grpc.ExperimentServiceStub(factory.channel(target))
        meta = (("authorization", f"Bearer {token}"),)
        name = f"experiments/{getattr(args, 'id', '')}"
        if args.command == "create":
            experiment = pb.Experiment(display_name=args.display_name, decision=args.decision)
            experiment.cells.extend(args.cell)
            experiment.guardrails.extend(args.guardrail)
            request = pb.CreateExperimentRequest(experiment_id=args.id, experiment=experiment)
            return await stub.CreateExperiment(request, metadata=meta)
        if args.command == "start":
            return await stub.StartExperiment(pb.StartExperimentRequest(name=name), metadata=meta)
        if args.command == "stop":
            request = pb.StopExperimentRequest(name=name, reason=args.reason)
            return await stub.StopExperiment(request, metadata=meta)
        if args.command == "get":
            return await stub.GetExperiment(pb.GetExperimentRequest(name=name), metadata=meta)
        if args.command == "readout":
            return await stub.GetReadout(pb.GetReadoutRequest(name=name), metadata=meta)
        return await stub.ListExperiments(pb.ListExperimentsRequest(page_size=100), metadata=meta)
    finally:
        await factory.close()


def readout_table(readout: pb.GetReadoutResponse) -> str:
    """The readout as a person reads it: one row per cell, then the sample-ratio check."""
    head = f"{'cell':<12} {'weight':>6} {'accounts':>8} {'share':>13}  "
    head += f"{'rebuffer ratio [95%]':<28} {'startup ms [95%]':<26} {'Δ startup vs control'}"
    rows = [f"{readout.experiment.name} ({pb.ExperimentState.Name(readout.experiment.state)})"]
    if readout.experiment.stop_reason:
        rows.append(f"stopped: {readout.experiment.stop_reason}")
    rows.append(head)
    for c in readout.cells:
        r, s = c.rebuffer_ratio, c.startup_ms
        rows.append(
            f"{c.cell:<12} {c.weight:>6} {c.accounts:>8} "
            f"{c.observed_share:>6.3f}/{c.expected_share:<6.3f}  "
            f"{r.value:.4f} [{r.low:.4f}, {r.high:.4f}] n={r.samples:<6} "
            f"{s.value:7.1f} [{s.low:.1f}, {s.high:.1f}] n={s.samples:<5} "
            f"{s.delta:+.1f} [{s.delta_low:+.1f}, {s.delta_high:+.1f}]"
        )
    srm = readout.sample_ratio
    verdict = "MISMATCH: do not trust this readout" if srm.mismatch else "ok"
    rows.append(f"sample ratio: chi2={srm.chi_square:.2f} p={srm.p_value:.3g} {verdict}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["serve"]:
        from services.experiments.service import main as serve

        return serve(args_list[1:])
    args = parser().parse_args(args_list)
    try:
        target = args.target or load(ExperimentsSettings).settings.experiments_target
        token = operator_token(args.token)
        reply = asyncio.run(call(args, target, token))
    except (credentials.MissingKey, ConfigError, ValueError, OSError) as exc:
        print(f"livemesh experiments: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"livemesh experiments: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if isinstance(reply, pb.GetReadoutResponse):
        print(readout_table(reply))
    else:
        print(json_format.MessageToJson(reply, indent=2))
    return 0
