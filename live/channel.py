"""A live channel run: paced source → ABR ladder encoders → CMAF packagers → Redis.

The blocking PyAV work runs in one worker thread (as aiortc runs its codecs);
finished chunks cross to the event loop through a bounded queue and are
published to Redis in order, one MULTI each.  If the machine cannot keep up,
the lag is logged and counted, late frames are skipped (the timeline keeps its
timestamps, the next segment still starts on a keyframe) and nothing queues up
without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
from prometheus_client import Counter, Gauge, start_http_server
from redis.exceptions import RedisError

from kernel import clock
from kernel.channel_config import ChannelConfig
from kernel.channel_config_store import restore_channel_config, wait_for_channel_config
from kernel.config import ChannelSettings, ConfigError, parse
from kernel.epoch import Epoch
from kernel.loop import run
from kernel.redis_server import redis_client
from live.encode import (
    AAC_PREROLL_FRAMES,
    AudioEncoder,
    EncodedUnit,
    RenditionEncoder,
    VideoEncoder,
)
from live.inspect import chunk_defect
from live.package import Chunk, ChunkPackager
from live.pipeline_faults import InjectedDefects
from live.pipelines import PipelineStore, claim_lead_ms, first_segment
from live.source import AAC_FRAME_SAMPLES, ChannelSource, SyntheticSource, TestPattern, Tone
from live.state import ChannelStore
from live.timing import UnitClock

log = logging.getLogger("livemesh.channel")

LATE_FRAMES = Counter(
    "livemesh_encoder_late_frames",
    "Source frames skipped because the encoder fell behind",
    ["channel"],
)
ENCODER_LAG = Gauge(
    "livemesh_encoder_lag_seconds", "How far the encoder is behind real time", ["channel"]
)
CHUNKS_DROPPED = Counter(
    "livemesh_chunks_dropped",
    "CMAF chunks dropped from the backlog kept while Redis was unreachable",
    ["channel", "rep"],
)
CHUNKS_PUBLISHED = Counter(
    "livemesh_chunks_published", "CMAF chunks stored in Redis", ["channel", "rep"]
)

QUEUED_SEGMENTS = 2  # chunks in flight between encoder and Redis, in segments' worth
BACKLOG_SEGMENTS = 15  # chunks kept while Redis is unreachable, in segments' worth
PROBE_S = 0.2  # how often an unreachable Redis is tried again

HandOver = Callable[[str, Chunk, str | None], None]  # rendition, chunk, defect found
Queued = tuple[str, Chunk, str | None]
Tamper = Callable[[str, Chunk], Chunk]  # a test's fault, applied before the inspection
HAND_OVER_POLL_S = 0.5  # how often a blocked hand-over checks for a stop
CONFIG_TIMEOUT_S = 120.0  # the channels service may start after the packager (deploy/local.toml)


@dataclass
class Rendition:
    """An encoder and the packager that cuts its output."""

    encoder: RenditionEncoder
    packager: ChunkPackager
    init: bytes | None  # a video rendition's init segment, to decode its segments' starts


class LiveChannel:
    """Runs one epoch of a channel until ``stop`` is called."""

    def __init__(
        self,
        config: ChannelConfig,
        store: ChannelStore,
        source: ChannelSource | None = None,
        pipeline: PipelineStore | None = None,
        tamper: Tamper | None = None,
    ) -> None:
        """``pipeline``: run as one of the channel's redundant pipelines (:mod:`live.pipelines`),
        else as its only one."""
        self.config = config
        self.store = store
        self.pipeline = pipeline
        self.tamper = tamper
        self.source = source or synthetic_source(config)
        self.timeline = config.timeline
        self._stopping = threading.Event()
        self.epoch: Epoch | None = None
        self.started = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Encode and publish until stopped; the epoch's media stays for its window."""
        video_encoders, audio_encoder = await asyncio.to_thread(self._open_encoders)
        encoders = [*video_encoders, audio_encoder]
        inits = {e.representation.id: e.init_segment for e in encoders}
        self.epoch = await self._start_epoch(encoders, inits)
        video = [self._rendition(e, self.epoch.start_ms) for e in video_encoders]
        audio = self._rendition(audio_encoder, self.epoch.start_ms)
        first = 0
        if self.pipeline is not None:
            first = first_segment(self.epoch, self.timeline.segment_ms)
        log.info("channel %s: epoch %s on air from segment %d", self.config.name, self.epoch.id,
                 first)  # fmt: skip
        self.started.set()

        queue: asyncio.Queue[Queued | None] = asyncio.Queue(
            maxsize=QUEUED_SEGMENTS * self.timeline.chunks_per_segment * (len(video) + 1)
        )
        publisher = asyncio.create_task(self._publish(queue, inits))
        publisher.add_done_callback(lambda _: self._publisher_ended(queue))
        hand_over = self._hand_over_to(queue, asyncio.get_running_loop())
        try:
            await asyncio.to_thread(self._encode_loop, video, audio, hand_over, first)
        finally:
            # cancelled (the thread is not): stop it, or it would outlive the loop
            self._stopping.set()
            if not publisher.done():
                await queue.put(None)
            await publisher  # raises what stopped it early, if anything
            if self.pipeline is not None:
                await self.pipeline.leave(self.epoch)
            else:
                await self.store.end_epoch(self.epoch)
            log.info("channel %s: epoch %s off air", self.config.name, self.epoch.id)

    async def _start_epoch(
        self, encoders: list[RenditionEncoder], inits: dict[str, bytes]
    ) -> Epoch:
        """A new epoch whose media time 0 is now that the encoders are ready; a redundant
        pipeline's starts one segment ahead, or is the one its peer already runs."""
        now_ms = clock.now_ms()
        lead_ms = 0 if self.pipeline is None else claim_lead_ms(self.timeline.segment_ms)
        start_ms = now_ms + lead_ms
        epoch = Epoch(str(start_ms), start_ms, tuple(e.representation for e in encoders))
        if self.pipeline is None:
            await self.store.start_epoch(epoch, inits, self.config.window_s)
            return epoch
        return await self.pipeline.claim_epoch(epoch, inits, self.config.window_s)

    def _hand_over_to(
        self, queue: asyncio.Queue[Queued | None], loop: asyncio.AbstractEventLoop
    ) -> HandOver:
        """How the encode thread queues a chunk for the publisher on ``loop``.

        It waits for room (back-pressure), but never past a stop: a chunk still
        waiting once the channel is stopping is dropped, so the thread always ends,
        even when the loop that should take the chunk has gone.
        """

        def hand_over(rep: str, chunk: Chunk, defect: str | None) -> None:
            queued = asyncio.run_coroutine_threadsafe(queue.put((rep, chunk, defect)), loop)
            while True:
                try:
                    queued.result(timeout=HAND_OVER_POLL_S)
                    return
                except concurrent.futures.TimeoutError:
                    if self._stopping.is_set():
                        queued.cancel()
                        return

        return hand_over

    def _publisher_ended(self, queue: asyncio.Queue[Queued | None]) -> None:
        """Publishing stopped: stop encoding too, and free an encoder waiting on the queue.

        The publisher only ends early on an unexpected error; without this the encode
        thread would wait forever for room in a queue nobody empties.
        """
        self._stopping.set()
        while not queue.empty():
            queue.get_nowait()

    def _open_encoders(self) -> tuple[list[RenditionEncoder], RenditionEncoder]:
        """Open every encoder (slow: x264 set-up) before the epoch's clock starts."""
        segment_frames = self.timeline.segment_ms * self.config.frame_rate // 1000
        video: list[RenditionEncoder] = [
            VideoEncoder(r, self.config.frame_rate, segment_frames, self.pipeline is not None)
            for r in self.config.video
        ]
        return video, AudioEncoder(self.config.audio, self.pipeline is not None)

    def _rendition(self, encoder: RenditionEncoder, start_ms: int) -> Rendition:
        unit_clock = UnitClock(self.timeline, encoder.units_per_second)
        packager = ChunkPackager(unit_clock, encoder.track, encoder.unit_duration, start_ms)
        video = encoder.representation.kind == "video"
        return Rendition(encoder, packager, encoder.init_segment if video else None)

    def _encode_loop(
        self, video: list[Rendition], audio: Rendition, hand_over: HandOver, first: int = 0
    ) -> None:
        """Paced to the wall clock: frame ``i`` is captured at ``start + i / fps``.

        Starts at segment ``first`` (a pipeline joining a running epoch)."""
        assert self.epoch is not None
        frame_clock = video[0].packager.clock
        start_ms, fps = self.epoch.start_ms, self.config.frame_rate
        first_ms = first * self.timeline.segment_ms
        index = first_ms * fps // 1000
        audio_clock = audio.packager.clock
        audio_index, last_segment = audio_clock.boundary(first_ms), -1
        if isinstance(audio.encoder, AudioEncoder):  # what its peer's encoder had before
            before = range(max(0, audio_index - AAC_PREROLL_FRAMES), audio_index)
            audio.encoder.preroll([self._sound(i) for i in before])
        while not self._stopping.is_set():
            due_ms = start_ms + index * 1000 // fps
            index = self._catch_up(index, due_ms)
            due_ms = start_ms + index * 1000 // fps
            segment = frame_clock.chunk_of(index)[0]
            frame = self.source.video_frame(index, due_ms)
            frame.pts, frame.time_base = index, Fraction(1, fps)  # the channel's clock rules
            for rendition in video:
                self._package(
                    rendition,
                    rendition.encoder.encode(frame, keyframe=segment != last_segment),
                    hand_over,
                )
            last_segment = segment
            # audio up to the end of this video frame
            while (
                audio_index * AAC_FRAME_SAMPLES * fps < (index + 1) * self.config.audio.sample_rate
            ):
                sound_in = audio_clock.chunk_of(audio_index)[0]
                # a segment's first: a redundant pipeline's encoder starts afresh
                starts = audio_index == audio_clock.chunk_units(sound_in, 0).start
                units = audio.encoder.encode(self._sound(audio_index), keyframe=starts)
                self._package(audio, units, hand_over)
                audio_index += 1
            index += 1
        for rendition in [*video, audio]:
            for chunk in rendition.packager.flush():
                self._hand_over_chunk(rendition, chunk, hand_over)

    def _sound(self, index: int) -> av.AudioFrame:
        """Audio frame ``index`` of the source, timed on the channel's clock."""
        sound = self.source.audio_frame(index)
        sound.pts = index * AAC_FRAME_SAMPLES
        sound.time_base = Fraction(1, self.config.audio.sample_rate)
        return sound

    def _catch_up(self, index: int, due_ms: int) -> int:
        """Wait for frame ``index``'s capture time; skip ahead if we are a chunk late.

        A skip never jumps over the first frame of a segment, so every segment still
        starts at exactly ``n·D`` with a keyframe, whatever the lag.
        """
        lag_ms = clock.now_ms() - due_ms
        ENCODER_LAG.labels(self.config.name).set(max(0, lag_ms) / 1000)
        if lag_ms < 0:
            self._stopping.wait(-lag_ms / 1000)  # pacing the source to the wall clock
            return index
        if lag_ms <= self.timeline.chunk_ms:
            return index
        segment_frames = self.timeline.segment_ms * self.config.frame_rate // 1000
        if index % segment_frames == 0:
            return index  # a segment's first frame is always encoded
        next_segment_start = index + segment_frames - index % segment_frames
        target = min(index + lag_ms * self.config.frame_rate // 1000, next_segment_start)
        LATE_FRAMES.labels(self.config.name).inc(target - index)
        log.warning(
            "channel %s: encoder %d ms behind real time, skipping %d frames",
            self.config.name,
            lag_ms,
            target - index,
        )
        return target

    def _package(self, rendition: Rendition, units: list[EncodedUnit], hand_over: HandOver) -> None:
        for unit in units:
            for chunk in rendition.packager.add(unit):
                self._hand_over_chunk(rendition, chunk, hand_over)

    def _hand_over_chunk(self, rendition: Rendition, chunk: Chunk, hand_over: HandOver) -> None:
        """Queue a chunk for publishing; a redundant pipeline inspects it first."""
        rep = rendition.encoder.representation.id
        if self.tamper is not None:
            chunk = self.tamper(rep, chunk)
        defect = None
        if self.pipeline is not None:
            packager = rendition.packager
            defect = chunk_defect(
                chunk.data,
                packager.clock.chunk_units(chunk.segment, chunk.chunk),
                packager.unit_duration,
                chunk.chunk == 0,
                rendition.init,
            )
            if defect:
                log.warning("channel %s: %s %d/%d defective: %s", self.config.name, rep,
                            chunk.segment, chunk.chunk, defect)  # fmt: skip
        hand_over(rep, chunk, defect)

    async def _publish(self, queue: asyncio.Queue[Queued | None], inits: dict[str, bytes]) -> None:
        """Store chunks in order; ride out a Redis outage or restart without stopping.

        While Redis is unreachable, chunks wait in a backlog of up to
        ``BACKLOG_SEGMENTS`` segments (the oldest dropped past it, and counted) and Redis
        is asked again every ``PROBE_S``, not once per chunk: the queue keeps draining,
        so the encoder stays on real time. Once Redis answers, the backlog is published
        in order, so the timeline has no hole where the outage was: a player that stalled
        finds the very segments it was waiting for and plays on, on the same URLs. An
        epoch Redis lost (a restart keeps nothing) is announced anew first (the store
        tells when).
        """
        assert self.epoch is not None
        backlog: collections.deque[Queued] = collections.deque(
            maxlen=max(1, queue.maxsize // QUEUED_SEGMENTS * BACKLOG_SEGMENTS)
        )
        loop = asyncio.get_running_loop()
        next_probe = 0.0
        while (item := await queue.get()) is not None:
            if backlog:
                self._keep(backlog, item)
                if loop.time() < next_probe:
                    continue
            else:
                backlog.append(item)
            if not await self._flush(backlog, inits):
                next_probe = loop.time() + PROBE_S

    def _keep(self, backlog: collections.deque[Queued], item: Queued) -> None:
        if len(backlog) == backlog.maxlen:
            CHUNKS_DROPPED.labels(self.config.name, backlog[0][0]).inc()
        backlog.append(item)

    async def _flush(self, backlog: collections.deque[Queued], inits: dict[str, bytes]) -> bool:
        """Publish the backlog, oldest first; False if Redis failed (what is left stays)."""
        assert self.epoch is not None
        waited = len(backlog) > 1
        while backlog:
            rep, chunk, defect = backlog[0]
            try:
                on_record = await self._publish_chunk(rep, chunk, defect)
                if not on_record:
                    log.warning("channel %s: Redis lost the epoch; announcing it again",
                                self.config.name)  # fmt: skip
                    await restore_channel_config(self.store.redis, self.config)
                    await self.store.start_epoch(
                        self.epoch, inits, self.config.window_s, fresh=False
                    )
            except RedisError as error:
                if len(backlog) == 1 and not waited:
                    log.warning("channel %s: Redis unreachable (%s); keeping chunks until "
                                "it is back", self.config.name, error)  # fmt: skip
                return False
            backlog.popleft()
            CHUNKS_PUBLISHED.labels(self.config.name, rep).inc()
        if waited:
            log.info("channel %s: Redis is back; published what it missed", self.config.name)
        return True

    async def _publish_chunk(self, rep: str, chunk: Chunk, defect: str | None) -> bool:
        assert self.epoch is not None
        window_s = self.config.window_s
        if self.pipeline is None:
            return await self.store.publish_chunk(
                self.epoch, rep, chunk.segment, chunk.chunk, chunk.data, chunk.last, window_s
            )
        return await self.pipeline.publish_chunk(
            self.epoch, rep, chunk, defect, self.timeline, window_s
        )


def synthetic_source(config: ChannelConfig) -> SyntheticSource:
    """The test pattern at the top rung's size, with the channel's audio settings."""
    top = config.video[0]
    segment_frames = config.segment_ms * config.frame_rate // 1000
    return SyntheticSource(
        TestPattern(top.width, top.height, config.frame_rate, segment_frames),
        Tone(config.audio.sample_rate, config.audio.channels),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh channel", description="run a live channel")
    parser.add_argument("name", help="channel name, e.g. demo")
    add_config_timeout(parser, "the channel")
    loaded, args = parse(ChannelSettings, argv, parser)
    settings = loaded.settings
    try:
        redis_url = settings.required_redis_url()
    except ConfigError as exc:
        parser.error(str(exc))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    run(_run(args.name, redis_url, args.config_timeout_s, settings.pipeline), settings.uvloop)
    return 0


def add_config_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config-timeout-s`` of a command that waits for its channels' records."""
    parser.add_argument(
        "--config-timeout-s",
        type=float,
        default=CONFIG_TIMEOUT_S,
        help=f"how long to wait for the channels service to create {what}",
    )


async def _run(name: str, redis_url: str, config_timeout_s: float, pipeline: str | None) -> None:
    """Run the channel as its record says (the channels service writes it; we wait for it)."""
    redis = redis_client(redis_url)
    try:
        config = await wait_for_channel_config(redis, name, config_timeout_s)
        store = ChannelStore(redis, config.name)
        redundant = PipelineStore(store, pipeline) if pipeline else None
        # the chaos rig's defects (live/pipeline_faults.py): a redundant pipeline's only
        defects = InjectedDefects.from_env(pipeline) if pipeline else None
        channel = LiveChannel(config, store, pipeline=redundant, tamper=defects)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, channel.stop)
        await channel.run()
    finally:
        await redis.aclose()
