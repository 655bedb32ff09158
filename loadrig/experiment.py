"""A scenario's experiment on the experiment service, for one run of the rig.

Defined and started before the viewers press play, so that each press of play gets its
viewer's cell (playback asks ``AssignCell`` and logs the exposure with the session); the
viewers' CMCD ``sid`` is their session's id, so the edges' QoE events reach the cell.
Read out after the run (``GetReadout``: accounts per cell, the sample-ratio check, each
cell's rebuffer ratio and startup with their intervals) once the per-cell sums have
caught up with the viewers' last requests, then stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from google.protobuf import json_format

from command.experiments import readout_table
from kernel.rpc.clients import RpcChannelFactory
from kernel.rpc.tls import TlsOption
from livemesh.experiments.v1 import experiments_pb2 as pb
from livemesh.experiments.v1 import experiments_pb2_grpc as pb_grpc
from loadrig.scenario import ExperimentPlan

SETTLE_POLL_S = 0.5  # the readout is read again this often until its samples stop growing
SETTLE_LIMIT_S = 15.0  # and no longer: a stream that never settles is reported as it is
# the service may still be starting with the stack (the gateway's readiness does not wait
# for it): the first call waits this long for its channel to connect
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Access:
    """How the rig reaches the experiment service: its target, an operator token, and the
    TLS files to call it with ("settings": the process's own)."""

    target: str
    token: str
    tls: TlsOption = "settings"


def samples(readout: pb.GetReadoutResponse) -> int:
    """Requests counted into the cells so far (the rebuffer ratio's samples)."""
    return sum(c.rebuffer_ratio.samples for c in readout.cells)


class ExperimentRun:
    """``async with``: the experiment defined and started; :meth:`readout` once the run
    is over; stopped on leaving."""

    def __init__(self, plan: ExperimentPlan, access: Access, experiment_id: str) -> None:
        self.plan = plan
        self.access = access
        self.name = f"experiments/{experiment_id}"
        self.experiment_id = experiment_id
        # a plain channel (no resilience layer): an operator's few calls, the first of which
        # waits for the service to be up (gRPC's wait_for_ready)
        self.factory = RpcChannelFactory(tls=access.tls, layer=None)
        self.meta = (("authorization", f"Bearer {access.token}"),)

    def _stub(self) -> pb_grpc.ExperimentServiceStub:
        return pb_grpc.ExperimentServiceStub(self.factory.channel(self.access.target))

    async def __aenter__(self) -> ExperimentRun:
        experiment = pb.Experiment(
            display_name=self.plan.display_name,
            decision=self.plan.decision,
            cells=[pb.Cell(name=c.name, weight=c.weight, value=c.value) for c in self.plan.cells],
        )
        create = pb.CreateExperimentRequest(experiment_id=self.experiment_id, experiment=experiment)
        try:
            await self._stub().CreateExperiment(
                create, metadata=self.meta, wait_for_ready=True, timeout=READY_TIMEOUT_S
            )
            start = pb.StartExperimentRequest(name=self.name)
            await self._stub().StartExperiment(start, metadata=self.meta)
        except BaseException:
            await self.factory.close()
            raise
        return self

    async def readout(self) -> dict[str, Any]:
        """The readout once the cells' sums have stopped growing (the edges send in
        batches, the per-cell reader reads in its own): the response as JSON, and the table
        ``livemesh experiments readout`` prints."""
        request = pb.GetReadoutRequest(name=self.name)
        found = await self._stub().GetReadout(request, metadata=self.meta)
        deadline = time.monotonic() + SETTLE_LIMIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL_S)
            again = await self._stub().GetReadout(request, metadata=self.meta)
            settled = samples(again) == samples(found)
            found = again
            if settled:
                break
        return {
            "readout": json_format.MessageToDict(found, preserving_proto_field_name=True),
            "table": readout_table(found),
        }

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            stop = pb.StopExperimentRequest(name=self.name, reason="the load test ended")
            await self._stub().StopExperiment(stop, metadata=self.meta)
        finally:
            await self.factory.close()
