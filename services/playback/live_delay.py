"""The live-delay decision at press play (issue 16): the viewer's cell of the experiment
running for ``live-delay``, if any, sets the session's target live latency, which the
gateway writes into the session's MPD (``ServiceDescription/Latency@target``).

Playback forwards the viewer's own token, so the experiment service answers for that
account only, and the assignment is logged as an exposure of the session (its QoE events
count for the cell). The experiment service is not on press play's critical path: when it
is slow, down or gives a value that is no latency, the session keeps the channel's own
target (0).
"""

from __future__ import annotations

import logging
import time

import grpc

from kernel.rpc.auth import bearer_metadata
from kernel.rpc.clients import RpcChannelFactory
from livemesh.experiments.v1 import experiments_pb2, experiments_pb2_grpc

log = logging.getLogger(__name__)

DECISION = "live-delay"
ASK_TIMEOUT_S = 0.25  # press play waits no longer for the cell
QUIET_S = 1.0  # not asked again this long after "none runs" or a failure
MIN_MS, MAX_MS = 100, 10_000  # a cell's value outside: not a live delay, ignored


def latency_ms(value: str) -> int:
    """A cell's value as a target latency in ms; 0 when it is none."""
    try:
        ms = int(value)
    except ValueError:
        return 0
    return ms if MIN_MS <= ms <= MAX_MS else 0


class LiveDelay:
    """Asks the experiment service (at ``target``; empty: none deployed) for a viewer's
    live delay. Press play pays the hop only while an experiment runs: after an answer
    that none does, or a failure, it is not asked again for ``quiet_s`` (the service's
    own view of the running experiments is as stale)."""

    def __init__(self, factory: RpcChannelFactory, target: str, quiet_s: float = QUIET_S) -> None:
        self.factory = factory
        self.target = target
        self.quiet_s = quiet_s
        self._quiet_until = 0.0

    async def target_ms(self, token: str, account: str, session_id: str) -> int:
        if not self.target or time.monotonic() < self._quiet_until:
            return 0
        ms = await self._ask(token, account, session_id)
        if ms is None:
            self._quiet_until = time.monotonic() + self.quiet_s
        return ms or 0

    async def _ask(self, token: str, account: str, session_id: str) -> int | None:
        """The cell's latency; 0 when it is none; None when no experiment runs or the
        service did not answer."""
        stub = self.factory.stub(experiments_pb2_grpc.ExperimentServiceStub, self.target)
        request = experiments_pb2.AssignCellRequest(
            decision=DECISION, account=account, session=session_id
        )
        try:
            reply = await stub.AssignCell(
                request, metadata=bearer_metadata(token), timeout=ASK_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            log.debug("live delay: no cell (%s): the channel's own", error.code().name)
            return None
        return latency_ms(reply.value) if reply.in_experiment else None
