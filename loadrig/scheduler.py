"""Spawns virtual players per the scenario across one worker process per core.

Every worker follows its share of the scenario's viewer curve on its own (worker ``w``
of ``W`` holds ``floor(v·(w+1)/W) - floor(v·w/W)`` of ``v`` viewers), so no message is
needed to start or stop a player: a flash crowd is many players started in one tick, a
mass exit is as many cancelled.  A viewer whose player gave up (every edge failed, or
press play did) comes back as a new viewer after a human pause of ``REJOIN_S``, not at
once: a chaos event that fails many viewers together must not turn into a press-play
storm of the rig's own making.  Workers send a one-line snapshot a second and, at the
end, every viewer's record; the controller (:func:`run_scenario`) applies the chaos
schedule, samples the nodes' metrics and draws the progress bar meanwhile.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from kernel.config import OnOff
from kernel.heap import settle_heap
from kernel.loop import run
from loadrig.chaos import ChaosRunner
from loadrig.looplag import LoopLag
from loadrig.metrics import Collector
from loadrig.player_context import PlayerContext
from loadrig.player_record import PlayerRecord
from loadrig.scenario import Scenario, device_for
from loadrig.virtual_player import VirtualPlayer

TICK_S = 0.1
SNAPSHOT_S = 1.0
SAMPLES_PER_PLAYER = 40  # latency/TTFB samples kept per viewer in the results
RECANCEL_S = 1.0  # a player still running this long after its cancellation is cancelled again
REJOIN_S = (2.0, 10.0)  # a failed viewer presses play again after this long (uniform)


def share(viewers: int, worker: int, workers: int) -> int:
    """Worker ``worker``'s part of ``viewers`` (the parts add up exactly; pure)."""
    return viewers * (worker + 1) // workers - viewers * worker // workers


def arrivals(target: int, active: int, returning: int) -> int:
    """Viewers to start now: the curve's ``target`` less those playing and those whose
    players failed and who will come back (their places are kept for them; pure)."""
    return max(0, target - active - returning)


def _thin(values: Sequence[float], keep: int) -> list[float]:
    if len(values) <= keep:
        return [round(v, 4) for v in values]
    step = len(values) / keep
    return [round(values[int(i * step)], 4) for i in range(keep)]


def record_summary(rec: PlayerRecord, left_at: float, t0: float) -> dict[str, Any]:
    buffer = rec.buffer
    return {
        "index": rec.index,
        "device": rec.device,
        "state": rec.state,
        "joined_s": round(rec.joined_at - t0, 3),
        "left_s": round(left_at - t0, 3),
        "startup_s": rec.startup_s,
        "startup_parts": rec.startup_parts(),
        "stalls": [round(s, 3) for s in rec.stalls],
        "latency_s": _thin(rec.latency_s, SAMPLES_PER_PLAYER),
        "delivery_ms": _thin(rec.delivery_ms, SAMPLES_PER_PLAYER),
        "ttfb_ms": _thin(rec.ttfb_ms, SAMPLES_PER_PLAYER),
        "switches": rec.switches,
        "failovers": rec.failovers,
        "failover_gaps": [round(g, 3) for g in rec.failover_gaps],
        "failover_stalls": [round(g, 3) for g in rec.failover_stalls],
        "errors": dict(rec.errors),
        "rungs": dict(rec.rungs),
        "bytes": rec.bytes,
        "edge": rec.edge,
        "buffer_target_s": buffer.live_delay_s if buffer else 0.0,
    }


async def stop_all(tasks: Sequence[asyncio.Task[None]], recancel_s: float = RECANCEL_S) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again each one still
    running after ``recancel_s``: Python 3.11's ``asyncio.wait_for`` loses a cancellation
    that comes as the call it wraps completes (cpython gh-86296), and a player it hit
    played on; with thousands leaving at once on a busy machine one is likely, and one
    gather then waited for it forever (the run never ended)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=recancel_s)


# -- worker side ---------------------------------------------------------------------------


@dataclass
class WorkerSetup:
    worker: int
    workers: int
    scenario: Scenario
    gateway: str
    tokens: list[str]
    credentials: list[tuple[str, str]]
    t0: float  # wall-clock start of the run, shared by every process
    uvloop: OnOff = "on"  # the worker's loop (the load test's uvloop setting)


class Worker:
    """One worker process's share of the viewers, stepped along the scenario's curve."""

    def __init__(
        self,
        setup: WorkerSetup,
        send: Callable[[tuple[Any, ...]], None],
        http: aiohttp.ClientSession,
        lag: LoopLag,
    ) -> None:
        self.setup, self.send, self.lag = setup, send, lag
        self.rng = random.Random(setup.worker)
        self.ctx = PlayerContext(
            setup.gateway, setup.scenario.player, http, setup.tokens, setup.credentials, self.rng
        )
        self.active: dict[int, tuple[VirtualPlayer, asyncio.Task[None]]] = {}
        self.done: list[dict[str, Any]] = []  # the records of viewers who left
        self.rejoins: list[float] = []  # when viewers whose players failed come back
        self.next_index = setup.worker
        self.lag_seen = 0  # loop-lag samples already reported

    async def run(self) -> None:
        """Follow the curve until the scenario ends, then stop every viewer."""
        next_snapshot = 0.0
        while (t := time.time() - self.setup.t0) <= self.setup.scenario.duration_s:
            self.retire_failed(t)
            await self.follow_curve(t)
            if t >= next_snapshot:
                self.snapshot(t)
                next_snapshot += SNAPSHOT_S
            await asyncio.sleep(TICK_S)  # the curve's clock: one step per tick
        await self.leave(list(self.active))

    def retire_failed(self, t: float) -> None:
        """A viewer whose player gave up leaves, and comes back after a pause."""
        for index in [i for i, (_p, task) in self.active.items() if task.done()]:
            self.retire(index)
            self.rejoins.append(t + self.rng.uniform(*REJOIN_S))
        self.rejoins = [at for at in self.rejoins if at > t]

    async def follow_curve(self, t: float) -> None:
        setup = self.setup
        target = share(setup.scenario.viewers_at(t), setup.worker, setup.workers)
        for _ in range(arrivals(target, len(self.active), len(self.rejoins))):
            self.join()
        if len(self.active) > target:
            await self.leave(self.rng.sample(sorted(self.active), len(self.active) - target))

    def join(self) -> None:
        index, scenario = self.next_index, self.setup.scenario
        device = device_for(scenario, index)
        player = VirtualPlayer(self.ctx, PlayerRecord(index, device.name), device)
        self.active[index] = (player, asyncio.create_task(player.run()))
        self.next_index += self.setup.workers

    async def leave(self, leaving: list[int]) -> None:
        await stop_all([self.active[i][1] for i in leaving])
        for index in leaving:
            self.retire(index)

    def retire(self, index: int) -> None:
        player, task = self.active.pop(index)
        if not task.done():
            task.cancel()
        self.done.append(record_summary(player.rec, time.time(), self.setup.t0))

    def snapshot(self, t: float) -> None:
        """The one-line snapshot a second: viewers by state and the worst loop lag since the
        last snapshot."""
        lag = self.lag.samples
        states = Counter(p.observe() for p, _ in self.active.values())
        worst_lag = round(max(lag[self.lag_seen :], default=0.0), 1)
        self.lag_seen = len(lag)
        self.send(("tick", self.setup.worker, round(t, 2), len(self.active), dict(states),
                   worst_lag))  # fmt: skip


async def worker_loop(setup: WorkerSetup, send: Callable[[tuple[Any, ...]], None]) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    with LoopLag() as lag:  # the worker's own lateness, sent with every snapshot
        async with aiohttp.ClientSession(connector=connector) as http:
            worker = Worker(setup, send, http, lag)
            settle_heap()  # thousands of viewers: full collections would pause them all
            await worker.run()
        send(("done", setup.worker, worker.done, sorted(worker.ctx.objects), lag.samples))


def worker_main(setup: WorkerSetup, conn: Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run(worker_loop(setup, conn.send), setup.uvloop)
    conn.close()


# -- controller side -----------------------------------------------------------------------


@dataclass
class RunState:
    ticks: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)  # per second, all workers
    players: list[dict[str, Any]] = field(default_factory=list)
    objects: set[str] = field(default_factory=set)
    loop_lag_ms: list[float] = field(default_factory=list)  # every worker's samples
    finished: int = 0


def _receive(
    conns: list[Connection],
    loop: asyncio.AbstractEventLoop,
    on_message: Callable[[tuple[Any, ...]], None],
) -> threading.Thread:
    """A thread that hands every worker message to the event loop."""

    def pump() -> None:
        from multiprocessing.connection import wait

        open_conns = list(conns)
        while open_conns:
            for conn in wait(open_conns):
                assert isinstance(conn, Connection)
                try:
                    message = conn.recv()
                except EOFError:
                    open_conns.remove(conn)
                    continue
                loop.call_soon_threadsafe(on_message, message)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


async def run_scenario(
    scenario: Scenario,
    gateway: str,
    tokens: list[str],
    credentials: list[tuple[str, str]],
    chaos: ChaosRunner,
    collector_root: int,
    workers: int = 0,
    progress: Callable[[RunState, float, Collector], None] | None = None,
    uvloop: OnOff = "on",
) -> tuple[RunState, Collector, float]:
    """Run ``scenario`` on ``workers`` processes (0: one per core) whose loop is ``uvloop``
    or asyncio's; the per-second series, every viewer's record and the node metrics."""
    workers = workers or os.cpu_count() or 1
    t0 = time.time() + 0.5  # every worker starts from the same instant
    context = multiprocessing.get_context("fork")
    procs, conns = [], []
    for w in range(workers):
        parent, child = context.Pipe(duplex=False)
        setup = WorkerSetup(w, workers, scenario, gateway, tokens, credentials, t0, uvloop)
        proc = context.Process(target=worker_main, args=(setup, child), daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    state = RunState()
    loop = asyncio.get_running_loop()
    all_done = asyncio.Event()

    def on_message(message: tuple[Any, ...]) -> None:
        if message[0] == "tick":
            _, worker, t, _active, _states, _lag = message
            state.ticks[worker] = message
            if worker == 0:  # one row a second, with every worker's latest snapshot
                total: Counter[str] = Counter()
                for tick in state.ticks.values():
                    total.update(tick[4])
                state.series.append(
                    {
                        "t": t,
                        "target": scenario.viewers_at(t),
                        "viewers": sum(tick[3] for tick in state.ticks.values()),
                        "playing": total["playing"],
                        "stalled": total["stalled"],
                        "starting": total["starting"],
                        # the latest snapshot's worst worker: how late its loop woke
                        "rig_lag_ms": max(tick[5] for tick in state.ticks.values()),
                    }
                )
        elif message[0] == "done":
            state.players.extend(message[2])
            state.objects.update(message[3])
            state.loop_lag_ms.extend(message[4])
            state.finished += 1
            if state.finished == workers:
                all_done.set()

    _receive(conns, loop, on_message)
    collector = Collector(collector_root, t0)
    collector.start()
    stop_metrics = asyncio.Event()
    metrics_task = asyncio.create_task(collector.run(stop_metrics))

    async def chaos_at(event: Any) -> None:
        await asyncio.sleep(max(0.0, t0 + event.at_s - time.time()))  # the event's moment
        chaos.apply(event, time.time() - t0)
        if event.duration_s and event.action in ("pause", "fault", "defect"):
            await asyncio.sleep(event.duration_s)
            chaos.undo(event, time.time() - t0)

    chaos_tasks = [asyncio.create_task(chaos_at(e)) for e in scenario.chaos]
    try:
        while not all_done.is_set():
            if progress is not None:
                progress(state, time.time() - t0, collector)
            try:
                await asyncio.wait_for(all_done.wait(), 1.0)
            except TimeoutError:
                if not any(p.is_alive() for p in procs) and not all_done.is_set():
                    raise RuntimeError("every worker exited before finishing") from None
    finally:
        for task in chaos_tasks:
            task.cancel()
        stop_metrics.set()
        await metrics_task
        for proc in procs:
            proc.join(timeout=10)
        if progress is not None:
            progress(state, time.time() - t0, collector)
            sys.stdout.write("\n")
    return state, collector, t0
