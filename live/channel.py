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
import concurrent.futures
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from prometheus_client import Counter, Gauge, start_http_server
from redis.exceptions import RedisError

from live.encode import AudioEncoder, EncodedUnit, RenditionEncoder, VideoEncoder
from live.ladder import DEFAULT_VIDEO_LADDER, ChannelConfig, VideoRung
from live.package import Chunk, ChunkPackager
from live.source import AAC_FRAME_SAMPLES, ChannelSource, SyntheticSource, TestPattern, Tone
from live.state import ChannelStore, Epoch
from live.timing import UnitClock
from livemesh import clock
from livemesh.redis_server import redis_client

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
    "livemesh_chunks_dropped", "CMAF chunks dropped while Redis was unreachable", ["channel", "rep"]
)
CHUNKS_PUBLISHED = Counter(
    "livemesh_chunks_published", "CMAF chunks stored in Redis", ["channel", "rep"]
)

QUEUED_SEGMENTS = 2  # chunks in flight between encoder and Redis, in segments' worth

HandOver = Callable[[str, Chunk], None]
HAND_OVER_POLL_S = 0.5  # how often a blocked hand-over checks for a stop


@dataclass
class Rendition:
    """An encoder and the packager that cuts its output."""

    encoder: RenditionEncoder
    packager: ChunkPackager


class LiveChannel:
    """Runs one epoch of a channel until ``stop`` is called."""

    def __init__(
        self, config: ChannelConfig, store: ChannelStore, source: ChannelSource | None = None
    ) -> None:
        self.config = config
        self.store = store
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
        start_ms = clock.now_ms()  # media time 0 is now that the encoders are ready
        video = [self._rendition(e, start_ms) for e in video_encoders]
        audio = self._rendition(audio_encoder, start_ms)
        self.epoch = Epoch(
            id=str(start_ms),
            start_ms=start_ms,
            representations=tuple(r.encoder.representation for r in [*video, audio]),
        )
        inits = {r.encoder.representation.id: r.encoder.init_segment for r in [*video, audio]}
        await self.store.put_config(self.config)
        await self.store.start_epoch(self.epoch, inits, self.config.window_s)
        log.info("channel %s: epoch %s on air", self.config.name, self.epoch.id)
        self.started.set()

        queue: asyncio.Queue[tuple[str, Chunk] | None] = asyncio.Queue(
            maxsize=QUEUED_SEGMENTS * self.timeline.chunks_per_segment * (len(video) + 1)
        )
        publisher = asyncio.create_task(self._publish(queue, inits))
        publisher.add_done_callback(lambda _: self._publisher_ended(queue))
        hand_over = self._hand_over_to(queue, asyncio.get_running_loop())
        try:
            await asyncio.to_thread(self._encode_loop, video, audio, hand_over)
        finally:
            # cancelled (the thread is not): stop it, or it would outlive the loop
            self._stopping.set()
            if not publisher.done():
                await queue.put(None)
            await publisher  # raises what stopped it early, if anything
            await self.store.end_epoch(self.epoch)
            log.info("channel %s: epoch %s off air", self.config.name, self.epoch.id)

    def _hand_over_to(
        self, queue: asyncio.Queue[tuple[str, Chunk] | None], loop: asyncio.AbstractEventLoop
    ) -> HandOver:
        """How the encode thread queues a chunk for the publisher on ``loop``.

        It waits for room (back-pressure), but never past a stop: a chunk still
        waiting once the channel is stopping is dropped, so the thread always ends,
        even when the loop that should take the chunk has gone.
        """

        def hand_over(rep: str, chunk: Chunk) -> None:
            queued = asyncio.run_coroutine_threadsafe(queue.put((rep, chunk)), loop)
            while True:
                try:
                    queued.result(timeout=HAND_OVER_POLL_S)
                    return
                except concurrent.futures.TimeoutError:
                    if self._stopping.is_set():
                        queued.cancel()
                        return

        return hand_over

    def _publisher_ended(self, queue: asyncio.Queue[tuple[str, Chunk] | None]) -> None:
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
            VideoEncoder(r, self.config.frame_rate, segment_frames) for r in self.config.video
        ]
        return video, AudioEncoder(self.config.audio)

    def _rendition(self, encoder: RenditionEncoder, start_ms: int) -> Rendition:
        unit_clock = UnitClock(self.timeline, encoder.units_per_second)
        packager = ChunkPackager(unit_clock, encoder.track, encoder.unit_duration, start_ms)
        return Rendition(encoder, packager)

    def _encode_loop(self, video: list[Rendition], audio: Rendition, hand_over: HandOver) -> None:
        """Paced to the wall clock: frame ``i`` is captured at ``start + i / fps``."""
        assert self.epoch is not None
        frame_clock = video[0].packager.clock
        start_ms, fps = self.epoch.start_ms, self.config.frame_rate
        index, audio_index, last_segment = 0, 0, -1
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
                sound = self.source.audio_frame(audio_index)
                sound.pts = audio_index * AAC_FRAME_SAMPLES
                sound.time_base = Fraction(1, self.config.audio.sample_rate)
                self._package(audio, audio.encoder.encode(sound), hand_over)
                audio_index += 1
            index += 1
        for rendition in [*video, audio]:
            for chunk in rendition.packager.flush():
                hand_over(rendition.encoder.representation.id, chunk)

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

    @staticmethod
    def _package(rendition: Rendition, units: list[EncodedUnit], hand_over: HandOver) -> None:
        rep = rendition.encoder.representation.id
        for unit in units:
            for chunk in rendition.packager.add(unit):
                hand_over(rep, chunk)

    async def _publish(
        self, queue: asyncio.Queue[tuple[str, Chunk] | None], inits: dict[str, bytes]
    ) -> None:
        """Store chunks in order; ride out a Redis outage or restart without stopping.

        While Redis is unreachable, chunks are dropped (live media is worthless late)
        and counted; once it answers again, an epoch it lost (a restart keeps nothing)
        is announced anew (the store tells when), so players resume on the same URLs.
        """
        assert self.epoch is not None
        reachable = True
        while (item := await queue.get()) is not None:
            rep, chunk = item
            try:
                on_record = await self.store.publish_chunk(
                    self.epoch, rep, chunk.segment, chunk.chunk, chunk.data, chunk.last,
                    self.config.window_s,
                )  # fmt: skip
                if not on_record:
                    log.warning("channel %s: Redis lost the epoch; announcing it again",
                                self.config.name)  # fmt: skip
                    await self.store.put_config(self.config)
                    await self.store.start_epoch(
                        self.epoch, inits, self.config.window_s, fresh=False
                    )
            except RedisError as error:
                if reachable:
                    log.warning("channel %s: Redis unreachable (%s); dropping chunks until "
                                "it is back", self.config.name, error)  # fmt: skip
                reachable = False
                CHUNKS_DROPPED.labels(self.config.name, rep).inc()
                continue
            if not reachable:
                log.info("channel %s: Redis is back; publishing again", self.config.name)
            reachable = True
            CHUNKS_PUBLISHED.labels(self.config.name, rep).inc()


def synthetic_source(config: ChannelConfig) -> SyntheticSource:
    """The test pattern at the top rung's size, with the channel's audio settings."""
    top = config.video[0]
    segment_frames = config.segment_ms * config.frame_rate // 1000
    return SyntheticSource(
        TestPattern(top.width, top.height, config.frame_rate, segment_frames),
        Tone(config.audio.sample_rate, config.audio.channels),
    )


def select_rungs(names: str) -> tuple[VideoRung, ...]:
    """The default ladder, or the named subset of it (e.g. ``"v480,v360"``)."""
    if not names:
        return DEFAULT_VIDEO_LADDER
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {r.name: r for r in DEFAULT_VIDEO_LADDER}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"livemesh channel: unknown rungs {unknown}; known: {sorted(known)}")
    return tuple(known[n] for n in wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livemesh channel", description="run a live channel")
    parser.add_argument("name", help="channel name, e.g. demo")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL"), required=not os.environ.get("REDIS_URL")
    )
    parser.add_argument("--segment-ms", type=int, default=2000)
    parser.add_argument("--chunk-ms", type=int, default=200)
    parser.add_argument("--window-s", type=int, default=60)
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument(
        "--rungs",
        default=os.environ.get("LIVEMESH_RUNGS", ""),
        help="comma-separated video rungs of the default ladder to encode "
        f"(default: all of {', '.join(r.name for r in DEFAULT_VIDEO_LADDER)}; env LIVEMESH_RUNGS)",
    )
    args = parser.parse_args(argv)
    video = select_rungs(args.rungs)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ChannelConfig(
        args.name,
        video=video,
        segment_ms=args.segment_ms,
        chunk_ms=args.chunk_ms,
        window_s=args.window_s,
    )
    asyncio.run(_run(config, args.redis_url))
    return 0


async def _run(config: ChannelConfig, redis_url: str) -> None:
    redis = redis_client(redis_url)
    channel = LiveChannel(config, ChannelStore(redis, config.name))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, channel.stop)
    try:
        await channel.run()
    finally:
        await redis.aclose()
