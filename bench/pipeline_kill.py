"""Benchmark: one redundant pipeline killed mid-segment under N viewers (issue 18).

Starts its own Redis (embedded), origin, shield and edge (the demo topology: the edge
asks the shield, the origin when the shield fails) and the channel as two pipelines
(``livemesh channel NAME --pipeline a|b``; two video rungs and audio, D = 2 s, C = 0.2 s).
N viewers (1,000; ``--quick``: 200) read ``--segments`` consecutive segments of v360
through the edge, as LL-DASH players do: each segment as it is produced, a cut one
asked again.  Mid-way, once the served copy of a segment has three chunks, the
pipeline serving it is killed (SIGKILL) and started again, as the supervisor does.

With ``--stagger``, pipeline b starts a segment after a, as a restarted pipeline joins.
Before each segment was encoded afresh its bytes differed from a's for good, and the
kill *replaced* the segment (every reader cut, the other copy fetched whole); now they
are a's from its first segment, so the kill carries on with identical bytes (``replaced``
names any segment that was replaced all the same).  Figures:

- **stalls beyond the buffer**: per viewer, playback starts ``--buffer`` seconds after
  its first chunk arrives and plays at 1x; a chunk that arrives after playback needs it
  is a stall (the time waited is added to the playhead);
- **decode errors**: a probe client reads the same segments through the edge and keeps
  the bytes; each must decode (ffprobe, with the init segment) and equal one pipeline's
  own copy (never a splice of two);
- **defective segments served**: a served copy its pipeline recorded as defective while
  the other pipeline's copy was clean (segments with no clean copy at all, both encoders
  behind on a starved machine, are listed apart: such a segment is served once whole,
  short of the frames skipped, which viewers feel as a stall);
- **served lateness**: how long after its media time each chunk of the served copy was
  published (the events stream's Redis timestamps), the worst before the killed segment
  (what the load alone costs) and in it (what the kill costs on top: the hand-over);
- **CPU of the second pipeline**: each pipeline's CPU over the run before the kill, in
  cores; the baseline is the first pipeline (one is what a channel costs without
  redundancy), and the ratio is the second's cost relative to it.

Targets: 0 stalls beyond the buffer, 0 decode errors, 0 defective segments served.
Run: ``python bench/pipeline_kill.py [--quick] [--stagger]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

import aiohttp
from _harness import CLI, LiveViewer, Procs, loadavg, print_result, raise_fd_limit, ratio

from kernel.channel_config import AudioRung, ChannelConfig, VideoRung
from kernel.channel_config_store import create_channel_config
from kernel.epoch import Position
from kernel.procfs import cpu_seconds
from kernel.redis_server import EmbeddedRedis, redis_client
from live.pipelines import PIPELINES
from live.state import ChannelStore

CHANNEL = "redundant"
REP = "v360"
CONFIG = ChannelConfig(
    CHANNEL,
    video=(VideoRung("v360", 640, 360, 600_000), VideoRung("v180", 320, 180, 200_000)),
    audio=AudioRung("a64", 64_000),
)
CHUNK_S = CONFIG.chunk_ms / 1000
CHUNKS = CONFIG.timeline.chunks_per_segment
KILL_AT_CHUNK = 3
PROBE = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"]
PROBE += ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"]


class Viewer(LiveViewer):
    """A bench viewer that asks again for a cut segment, as a player does."""

    retries = 0

    async def watch(self, first: int, last: int) -> None:
        try:
            for number in range(first, last + 1):
                for _attempt in range(3):
                    try:
                        await self.get(number)
                        break
                    except (OSError, RuntimeError) as exc:
                        self.retries += 1
                        self.link.close()
                        self.errors.append(f"{number}: {type(exc).__name__} {exc}")
        finally:
            self.link.close()

    def stalls(self, first: int, last: int, buffer_s: float) -> tuple[list[int], float]:
        """The segments of the stalls beyond ``buffer_s`` of playback from the first chunk
        (one entry per stall), and their seconds in all.

        Chunks are taken in the order they arrived within each segment (an encoder that
        fell behind may have left one out); a segment never received is one stall.
        """
        arrivals: dict[int, list[float]] = {}
        for n, _k, t in self.chunks:
            arrivals.setdefault(n, []).append(t)
        if first not in arrivals:
            return [first], 0.0
        start = arrivals[first][0] + buffer_s
        stalled: list[int] = []
        waited, played = 0.0, 0
        for n in range(first, last + 1):
            if n not in arrivals:
                stalled.append(n)
                continue
            for got in arrivals[n]:
                need = start + played * CHUNK_S + waited
                if got > need:
                    stalled.append(n)
                    waited += got - need
                played += 1
        return stalled, waited


async def probe(edge: str, epoch: str, first: int, last: int) -> dict[int, bytes]:
    """What one client reading through the edge got of each segment (retrying a cut)."""
    got: dict[int, bytes] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for n in range(first, last + 1):
            for _attempt in range(3):
                try:
                    async with http.get(f"{edge}/live/{CHANNEL}/{epoch}/{REP}/{n}.m4s") as r:
                        if r.status == 200:
                            got[n] = await r.read()
                            break
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                    continue
    return got


def decodes(init: bytes, media: bytes, tmp: str) -> bool:
    path = os.path.join(tmp, "segment.mp4")
    with open(path, "wb") as file:
        file.write(init + media)
    done = subprocess.run(
        [*PROBE, path],
        capture_output=True,
        text=True,
        check=False,
    )
    frames = done.stdout.strip()
    return done.returncode == 0 and not done.stderr.strip() and frames.isdigit() and int(frames) > 0


async def epoch_and_first(store: ChannelStore) -> tuple[str, int]:
    """The running epoch, once both pipelines publish, and the first segment to watch."""
    while True:  # the pipelines give no start signal of their own
        epoch = await store.current_epoch()
        if epoch is not None:
            positions = [
                await store.redis.hget(store.keys.pipeline(p).position(epoch.id), REP)
                for p in PIPELINES
            ]
            if all(positions):
                latest = max(Position.decode(raw).segment for raw in positions if raw)
                return epoch.id, latest + 1  # the next: held until it exists
        await asyncio.sleep(0.1)


async def until_served(store: ChannelStore, epoch: str, segment: int, chunk: int) -> str:
    """Once the served copy of ``segment`` has ``chunk``: the pipeline serving it."""
    async for event in store.events(block_ms=30_000):
        if (event.epoch, event.rep) == (epoch, REP) and (event.segment, event.chunk) >= (
            segment,
            chunk,
        ):
            owner = await store.redis.hget(store.keys.owners(epoch), f"{REP}:{segment}")
            assert owner is not None
            return owner.decode().split(":")[0]
    raise SystemExit("the channel stopped publishing")


async def run(args: argparse.Namespace, procs: Procs, redis_url: str, edge: str) -> dict:
    store = ChannelStore(redis_client(redis_url), CHANNEL)
    pipelines = {}
    for name in PIPELINES:
        command = [*CLI, "channel", CHANNEL, "--pipeline", name, "--redis-url", redis_url]
        pipelines[name] = procs.start(f"pipeline-{name}", command)
        if args.stagger and name == "a":
            while await store.current_epoch() is None:
                await asyncio.sleep(0.1)
            await asyncio.sleep(CONFIG.segment_ms / 1000)  # b joins a segment later
    epoch, first = await epoch_and_first(store)
    last = first + args.segments - 1
    killed_in = first + 2
    host, port = urlsplit(edge).hostname or "", urlsplit(edge).port or 80
    viewers = [Viewer(host, port, f"/live/{CHANNEL}/{epoch}/{REP}") for _ in range(args.viewers)]
    cpu0 = {n: cpu_seconds(p.pid) for n, p in pipelines.items()}
    began = time.monotonic()
    watching = [asyncio.create_task(v.watch(first, last)) for v in viewers]
    probing = asyncio.create_task(probe(edge, epoch, first, last))
    owner = await until_served(store, epoch, killed_in, KILL_AT_CHUNK - 1)
    window = time.monotonic() - began
    cores = {n: (cpu_seconds(p.pid) - cpu0[n]) / window for n, p in pipelines.items()}
    os.kill(pipelines[owner].pid, signal.SIGKILL)
    pipelines[owner].wait()
    command = [*CLI, "channel", CHANNEL, "--pipeline", owner, "--redis-url", redis_url]
    procs.start(f"pipeline-{owner}-restarted", command)  # as the supervisor does
    await asyncio.gather(*watching)
    got = await probing
    report = await verify(store, epoch, first, last, got)
    lateness = await served_lateness(store, epoch, first, last)
    stalls = [v.stalls(first, last, args.buffer) for v in viewers]
    errors = [e for v in viewers for e in v.errors]
    await store.redis.aclose()
    return {
        "viewers": args.viewers,
        "segments": [first, last],
        "killed": {"pipeline": owner, "segment": killed_in, "after_chunks": KILL_AT_CHUNK},
        "stagger": args.stagger,
        "replaced": report.pop("replaced"),
        "stalls_beyond_buffer": sum(len(c) for c, _ in stalls),
        # the same measure before the kill: what the machine's load alone costs
        "stalls_before_the_killed_segment": sum(
            len([n for n in c if n < killed_in]) for c, _ in stalls
        ),
        "stalls_from_the_killed_segment": sum(
            len([n for n in c if n >= killed_in]) for c, _ in stalls
        ),
        "viewers_stalled": sum(1 for c, _ in stalls if c),
        "stall_s_max": round(max((w for _, w in stalls), default=0.0), 3),
        "viewer_retries": sum(v.retries for v in viewers),
        "viewer_errors_sample": errors[:3],
        "viewers_missing_segments": sum(1 for v in viewers if len(v.segments) < args.segments),
        **report,
        "served_lateness_ms_max_before_the_killed_segment": max(
            (ms for n, ms in lateness if n < killed_in), default=None
        ),
        "served_lateness_ms_max_in_the_killed_segment": max(
            (ms for n, ms in lateness if n == killed_in), default=None
        ),
        "served_lateness_ms_max_after_it": max(
            (ms for n, ms in lateness if n > killed_in), default=None
        ),
        "pipeline_cores": {n: round(c, 3) for n, c in cores.items()},
        "second_pipeline_cores": round(cores[PIPELINES[1]], 3),
        "baseline_one_pipeline_cores": round(cores[PIPELINES[0]], 3),
        "ratio_second_over_one": ratio(cores[PIPELINES[1]], cores[PIPELINES[0]]),
    }


async def served_lateness(
    store: ChannelStore, epoch: str, first: int, last: int
) -> list[tuple[int, int]]:
    """Per served chunk of ``REP`` (segment, ms): how long after its media end on the wall
    the publish script served it. An event names the last chunk served; every chunk after
    the one before it was served then. The events stream's ids are Redis's clock, this
    machine's."""
    record = await store.find_epoch(epoch)
    assert record is not None
    late: list[tuple[int, int]] = []
    served: dict[int, int] = {}  # segment -> the last chunk served so far
    for entry_id, fields in await store.redis.xrange(store.keys.events):
        n, k = int(fields[b"n"]), int(fields[b"k"])
        if fields[b"e"].decode() != epoch or fields[b"r"].decode() != REP or not first <= n <= last:
            continue
        at_ms = int(entry_id.decode().split("-")[0])
        segment_ms = record.start_ms + n * CONFIG.segment_ms
        for j in range(served.get(n, -1) + 1, k + 1):
            late.append((n, at_ms - (segment_ms + (j + 1) * CONFIG.chunk_ms)))
        served[n] = max(k, served.get(n, -1))
    return late


async def verify(
    store: ChannelStore, epoch: str, first: int, last: int, got: dict[int, bytes]
) -> dict:
    """Decode errors and splices in what the probe got; defective served copies."""
    init = await store.init_segment(epoch, REP)
    assert init is not None
    decode_errors, not_a_copy, defective, replaced, starved = [], [], [], [], []
    defects = {
        p: {k.decode() for k in await store.redis.hkeys(store.keys.pipeline(p).defects(epoch))}
        for p in PIPELINES
    }
    with tempfile.TemporaryDirectory(prefix="lm-pipekill-") as tmp:
        for n in range(first, last + 1):
            body = got.get(n)
            if body is None or not decodes(init, body, tmp):
                decode_errors.append(n)
            copies, whole = {}, {}
            for p in PIPELINES:
                key = store.keys.pipeline(p).segment(epoch, REP, n)
                copies[p] = b"".join(await store.redis.lrange(key, 0, -1))
                raw_pos = await store.redis.hget(store.keys.pipeline(p).position(epoch), REP)
                whole[p] = (
                    bool(copies[p])
                    and bool(raw_pos)
                    and Position.decode(raw_pos or b"").has_complete(n)
                )
            if body is not None and body not in copies.values():
                not_a_copy.append(n)
            raw = await store.redis.hget(store.keys.owners(epoch), f"{REP}:{n}")
            owner, generation = raw.decode().split(":") if raw else ("", "0")
            if int(generation):
                replaced.append(n)
            # a clean copy: whole, and no defect recorded (a restarted pipeline has none of
            # the segments before the one it rejoined at)
            clean = [p for p in PIPELINES if f"{REP}:{n}" not in defects[p] and whole[p]]
            if owner and owner not in clean and clean:
                defective.append((n, owner, sorted(p for p in PIPELINES if p not in clean)))
            if not clean:  # both encoders fell behind: served once whole, short of frames
                starved.append(n)
    return {
        "decode_errors": len(decode_errors),
        "decode_error_segments": decode_errors,
        "not_one_pipelines_copy": len(not_a_copy),
        "defective_served": len(defective),
        "defective_served_segments": defective,
        "no_clean_copy_segments": starved,
        "replaced": replaced,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 viewers")
    parser.add_argument("--viewers", type=int, default=None, help="viewers (1000)")
    parser.add_argument("--segments", type=int, default=6, help="segments each reads")
    parser.add_argument("--buffer", type=float, default=1.0, help="player buffer, s")
    parser.add_argument("--stagger", action="store_true", help="b starts a segment late")
    args = parser.parse_args()
    args.viewers = args.viewers or (200 if args.quick else 1000)
    raise_fd_limit(4 * args.viewers + 1024)
    print(f"load average at start: {loadavg()}", flush=True)
    with EmbeddedRedis() as redis, Procs() as procs:
        create_channel_config(redis.url, CONFIG)
        origin = procs.origin(redis.url)
        shield = procs.edge("shield-1", "shield", [origin], tokens=False)
        edge = procs.edge("edge-1", "edge", [shield], [origin], tokens=False)
        result = asyncio.run(run(args, procs, redis.url, edge))
    result["load_average"] = loadavg()
    result["target_met"] = not (
        result["stalls_beyond_buffer"] or result["decode_errors"] or result["defective_served"]
    )
    print(
        f"{result['viewers']} viewers, segments {result['segments']}, pipeline "
        f"{result['killed']['pipeline']} killed in segment {result['killed']['segment']} "
        f"(replaced: {result['replaced']}): stalls beyond {args.buffer} s buffer "
        f"{result['stalls_beyond_buffer']} ({result['viewers_stalled']} viewers, max "
        f"{result['stall_s_max']} s), decode errors {result['decode_errors']}, not one "
        f"pipeline's copy {result['not_one_pipelines_copy']}, defective served "
        f"{result['defective_served']}, viewer retries {result['viewer_retries']}; served "
        f"lateness max {result['served_lateness_ms_max_before_the_killed_segment']} ms before "
        f"the killed segment, {result['served_lateness_ms_max_in_the_killed_segment']} ms in "
        f"it, {result['served_lateness_ms_max_after_it']} ms after; pipelines "
        f"{result['pipeline_cores']} cores (second/one {result['ratio_second_over_one']}); "
        f"load average {result['load_average']}"
    )
    print_result(result)


if __name__ == "__main__":
    main()
