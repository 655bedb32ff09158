"""Chaos against redundant pipelines: the rig's kill and defect actions on real pipeline
processes, and the defects a pipeline can be told to make (read by its own inspection)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kernel import clock
from kernel.channel_config_store import put_channel_config
from kernel.defect_faults import PIPELINE_FAULTS_ENV, PIPELINE_FAULTS_NAME, DefectRule, write_rules
from kernel.supervise import Backoff, ProcessSpec, Stack
from live.cmaf import Sample, fragment, styp
from live.inspect import chunk_defect
from live.package import Chunk
from live.pipeline_faults import InjectedDefects, without_last_frame
from live.pipelines import PIPELINES
from live.state import ChannelStore
from loadrig.chaos import ChaosRunner, names_of
from loadrig.scenario import ChaosEvent
from loadrig.scenario_file import ScenarioError, load_scenario, parse_scenario
from tests.live_helpers import small_config
from tests.test_pipelines import defective_segments, first_epoch, own_chunks

UNITS = range(0, 6)  # chunk 0 of segment 0 at 30 fps and C = 200 ms (timescale 15360)


def first_chunk() -> bytes:
    samples = [Sample(b"\0\0\0\1key", 512, sync=True)]
    samples += [Sample(b"\0\0\0\1p%d" % i, 512, sync=False) for i in range(5)]
    return styp() + fragment(1, 1, 0, samples)


def test_an_injected_defect_is_what_the_packager_finds() -> None:
    whole = first_chunk()
    assert chunk_defect(whole, UNITS, 512, first_of_segment=True) is None
    short = without_last_frame(whole)
    assert chunk_defect(short, UNITS, 512, first_of_segment=True) == "5 access units, 6 due"
    assert len(short) < len(whole)


def test_rules_apply_to_their_pipeline_until_they_lapse(tmp_path: Path) -> None:
    path = tmp_path / PIPELINE_FAULTS_NAME
    chunk = Chunk(0, 0, first_chunk(), last=False)
    tamper = InjectedDefects(str(path), "b")
    assert tamper("v360", chunk) == chunk  # no file: no defect
    write_rules(path, [DefectRule("b", "truncate", clock.now_ms() + 60_000)])
    assert len(tamper("v360", chunk).data) == len(chunk.data) // 2
    assert InjectedDefects(str(path), "a")("v360", chunk) == chunk  # another pipeline's rule
    write_rules(path, [DefectRule("b", "drop-frames", clock.now_ms() - 1)])
    assert tamper("v360", chunk) == chunk  # lapsed
    with pytest.raises(ValueError, match="defect kind"):
        write_rules(path, [DefectRule("b", "melt", 0)])


def test_chaos_names_a_pipeline_and_checks_a_defect_event() -> None:
    argv = ["channel", "demo", "--pipeline", "b"]
    assert {"channel-demo", "pipeline-b", "channel-demo-b"} <= names_of(argv)
    assert "pipeline-a" not in names_of(["channel", "demo"])
    kinds = load_scenario("pipeline-kill").chaos
    assert [e.action for e in kinds] == ["kill", "defect", "defect", "pause"]
    base = 'name = "x"\ndescription = "x"\n[[phase]]\nkind = "hold"\nduration_s = 10\n'
    base += '[[device]]\nname = "tv"\nshare = 1.0\n[[chaos]]\nat_s = 1\naction = "defect"\n'
    for snippet, message in (
        ('target = "pipeline-a"\nmatch = "melt"\nduration_s = 2\n', "match: one of"),
        ('target = "edge-1"\nmatch = "truncate"\nduration_s = 2\n', "names a pipeline"),
        ('target = "pipeline-a"\nmatch = "truncate"\n', "needs a duration"),
    ):
        with pytest.raises(ScenarioError, match=message):
            parse_scenario(base + snippet)


@pytest.fixture
def pipelines(tmp_path: Path, redis_url: str) -> Iterator[tuple[Stack, ChaosRunner]]:
    """Pipelines a and b of ``chaos`` as processes below this one, as the rig's stack runs
    them (the defect file beside the fault file), and the rig's chaos runner."""
    faults = tmp_path / "faults.json"
    env = {"REDIS_URL": redis_url, PIPELINE_FAULTS_ENV: str(tmp_path / PIPELINE_FAULTS_NAME)}
    stack = Stack(Backoff())
    runner = ChaosRunner(os.getpid(), str(faults))
    for name in PIPELINES:
        stack.start(ProcessSpec(name, ["channel", "chaos", "--pipeline", name], None, env))
    yield stack, runner
    runner.close()
    stack.stop()


async def test_defects_injected_into_one_pipeline_never_reach_players(
    redis: aioredis.Redis, pipelines: tuple[Stack, ChaosRunner]
) -> None:
    config = small_config("chaos")
    await put_channel_config(redis, config)
    store = ChannelStore(redis, config.name)
    _stack, runner = pipelines
    epoch = await first_epoch(store)
    rounds = [("pipeline-b", "truncate"), ("pipeline-a", "drop-frames")]
    for target, kind in rounds:
        event = ChaosEvent(0.0, "defect", target, duration_s=2.0, match=kind)
        runner.apply(event, 0.0)
        await after_segments(store, epoch.id, 3)
        runner.undo(event, 0.0)
    assert [entry.detail.split()[0] for entry in runner.log if entry.action == "defect"] == [
        "truncate",
        "drop-frames",
    ]
    defects = {p: await defective_segments(store, p, epoch.id) for p in PIPELINES}
    injected = {p: {d for d in defects[p] if d[0] == "v360"} for p in PIPELINES}
    assert injected["b"] and injected["a"]  # each pipeline broke some of its segments
    position = await store.position(epoch.id, "v360")
    assert position is not None
    for n in range(position.segment):
        served, _ = await store.chunks(epoch.id, "v360", n)
        clean = [p for p in PIPELINES if ("v360", n) not in defects[p]]
        copies = {p: await own_chunks(store, p, epoch.id, "v360", n) for p in clean}
        if clean:  # the other was clean: its copy, never the broken one, is served
            assert served in copies.values(), n


async def after_segments(store: ChannelStore, epoch: str, count: int) -> None:
    """Return once ``count`` more segments of v360 are complete."""
    seen = 0
    async for event in store.events(block_ms=30_000):
        if event.epoch == epoch and event.rep == "v360" and event.last:
            seen += 1
            if seen == count:
                return
    raise AssertionError("the channel stopped")
