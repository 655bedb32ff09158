"""A :class:`ChannelSource` fed by a broadcaster: the bridge between two clocks.

The broadcaster's frames arrive when the network delivers them, stamped with the
broadcaster's clock.  The channel pulls frames on its own wall-clock timeline.
In between:

* every input timestamp is mapped onto the wall clock by a :class:`MediaClock`
  (``arrival of the first frame + playout delay + (pts - first pts)``), and
  re-anchored when the mapping leaves a sane window (a restart, a jump, a gap,
  a drifting sender clock), so jitter never reaches the output;
* video keeps a short queue of mapped pictures; a pull at wall time ``t`` shows
  the newest picture mapped at or before ``t`` (frame-rate conversion by repeat
  and drop), scaled and letterboxed to the top rung's size once per picture;
* audio is resampled to the channel's rate and layout and written at the
  *output sample position* its mapped time names, so a pull of AAC frame ``k``
  takes exactly the samples of ``[k*1024, (k+1)*1024)``: sound and picture of
  one instant leave together (within a frame), and missing samples are silence.

While no broadcaster is attached, or the attached one has sent nothing for
:data:`STALE_MS`, the channel gets the slate and silence.  One broadcaster at
a time: a second :meth:`IngestSource.attach` raises :class:`ChannelBusy`
unless the first one has gone stale (then it is evicted: a crashed encoder's
reconnect must not wait for the dead session's timeout), or unless it asks to be
the *backup* feed (dual ingest): one backup is kept beside a live primary, its
media mapped but not shown, and it takes over the instant the primary goes stale.
A backup whose picture disagrees with the primary's (:mod:`live.ingest.feed_params`)
is cut, told why, and the reason kept in :attr:`IngestSource.refused`.  When the channel ends,
:meth:`IngestSource.end` cuts its broadcaster and no other may attach.  Either way
the feed's ``on_cut`` is told why, so the session can tell its broadcaster before
closing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter

from kernel import clock
from kernel.channel_config import ChannelConfig
from live.ingest.feed_params import FeedParams, disagreement
from live.ingest.media_clock import MediaClock
from live.ingest.picture_fit import fit_picture
from live.ingest.slate import SlateKind, Slates
from live.source import AAC_FRAME_SAMPLES

log = logging.getLogger("livemesh.ingest")

STALE_MS = 2000  # a broadcaster that sent nothing for this long is shown as gone
VIDEO_QUEUE_FRAMES = 60  # decoded pictures waiting for their playout time, at most
AUDIO_QUEUE_MS = 2000  # audio waiting for its playout time, at most
AUDIO_SNAP_MS = 20  # a frame this close to where the last one ended is written back to back

RESYNCS = Counter(
    "livemesh_ingest_clock_resyncs", "Input clocks re-anchored onto the wall clock", ["channel"]
)
BACKUPS = Counter("livemesh_ingest_backup_feeds", "Backup feeds by outcome", ["channel", "outcome"])
DROPPED = Counter(
    "livemesh_ingest_dropped", "Input frames dropped (late or over the bound)", ["channel", "kind"]
)


class ChannelBusy(Exception):
    """The channel already has a live broadcaster."""


class ChannelEnded(Exception):
    """The channel has ended: it takes no broadcaster any more."""


Cut = Callable[[str], None]  # told why a feed was cut off (evicted, channel ended)


@dataclass
class _AudioRun:
    """Resampled audio samples starting at an output sample position."""

    position: int
    samples: NDArray[np.float32]  # shape (channels, n)

    @property
    def end(self) -> int:
        return self.position + self.samples.shape[1]


class IngestSource:
    """The channel's source while it takes ingest: broadcaster or slate."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        top = config.video[0]
        self.width, self.height = top.width, top.height
        self.sample_rate, self.channels = config.audio.sample_rate, config.audio.channels
        self.slates = Slates(self.width, self.height, config.name)
        self._lock = threading.Lock()
        self._feed: IngestFeed | None = None
        self._backup: IngestFeed | None = None  # dual ingest: stands by beside the primary
        self.refused: str | None = None  # why the last backup feed was turned away
        self.on_change: Callable[[], None] | None = None  # feeds came, went or were refused
        self._ended = False
        self._ever_live = False
        self._origin_ms: int | None = None  # wall clock of the channel's media time 0
        self._pictures: deque[tuple[float, av.VideoFrame]] = deque()
        self._current: av.VideoFrame | None = None
        self._current_fitted: av.VideoFrame | None = None
        self._audio: deque[_AudioRun] = deque()
        self.on_air = threading.Event()  # set while a broadcaster's media is shown

    # -- broadcaster side ---------------------------------------------------------------

    def attach(
        self, shared_clock: bool, on_cut: Cut | None = None, backup: bool = False
    ) -> IngestFeed:
        """A feed for a new broadcaster; raises :class:`ChannelBusy` if one is live (and,
        for a ``backup``, a live backup too), :class:`ChannelEnded` once the channel ended.

        ``shared_clock``: audio and video timestamps come from one clock (RTMP), so
        one mapping serves both; otherwise (WebRTC tracks start at 0 each) each
        track is anchored on its own first arrival.  A ``backup`` with no live primary
        is the primary.
        """
        with self._lock:
            if self._ended:
                raise ChannelEnded(self.config.name)
            now = clock.now_ms()
            primary_live = self._feed is not None and not self._feed.stale(now)
            feed = IngestFeed(self, shared_clock, on_cut)
            if backup and primary_live:
                evicted = self._backup
                if evicted is not None and not evicted.stale(now):
                    raise ChannelBusy(self.config.name)
                self._backup = feed
            elif primary_live:
                raise ChannelBusy(self.config.name)
            else:
                evicted, self._feed = self._feed, feed
                self._clear_media()
        if evicted is not None:
            log.info("channel %s: stale broadcaster evicted by a new one", self.config.name)
            evicted.cut("a new broadcaster took the channel over")
        self._changed()
        return feed

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def status(self) -> dict[str, str]:
        """What an operator is shown of the feeds (the channels service's ``IngestStatus``)."""
        with self._lock:
            feeds = {"primary": self._feed, "backup": self._backup}
            refused = self.refused
        shown = {role: feed.described() for role, feed in feeds.items() if feed is not None}
        return {**shown, "refused_backup": refused} if refused else shown

    def end(self) -> None:
        """The channel ended: cut its broadcaster's feeds (told why) and take no other."""
        with self._lock:
            self._ended = True
            feeds = [f for f in (self._feed, self._backup) if f is not None]
        for feed in feeds:
            self.detach(feed)
            feed.cut(f"channel {self.config.name} has ended")

    def _described(self, feed: IngestFeed) -> None:
        """``feed``'s first picture said what it carries: shown to operators, and a backup
        that disagrees with its primary (whichever spoke first) is cut, told why."""
        self._check_backup(feed)
        self._changed()

    def _check_backup(self, feed: IngestFeed) -> None:
        with self._lock:
            primary, backup = self._feed, self._backup
            if primary is None or backup is None or feed not in (primary, backup):
                return
            if primary.params is None or backup.params is None:
                return
            why = disagreement(primary.params, backup.params)
            if why is not None:
                self._backup = None
                self.refused = why
        if why is None:
            BACKUPS.labels(self.config.name, "agrees").inc()
        else:
            log.info("channel %s: backup feed refused: %s", self.config.name, why)
            BACKUPS.labels(self.config.name, "refused").inc()
            backup.cut(why)

    def _takes_over(self, feed: IngestFeed) -> bool:
        """Whether ``feed`` is the one shown: the primary, or a backup whose primary went
        stale (it is made the primary now, the old one cut)."""
        with self._lock:
            if self._feed is feed:
                return True
            if self._backup is not feed:
                return False
            old = self._feed
            if old is not None and not old.stale(clock.now_ms()):
                return False
            self._feed, self._backup = feed, None
            self._clear_media()
        BACKUPS.labels(self.config.name, "took_over").inc()
        log.info("channel %s: the backup feed took over from a stale primary", self.config.name)
        if old is not None:
            old.cut("the backup feed took over")
        self._changed()
        return True

    def detach(self, feed: IngestFeed) -> None:
        with self._lock:
            if self._backup is feed:
                self._backup = None
            if self._feed is feed:
                self._feed = None
                self._clear_media()
                self.on_air.clear()
        feed.detached = True
        self._changed()

    @property
    def publishing(self) -> bool:
        return self._feed is not None

    def _clear_media(self) -> None:
        self._pictures.clear()
        self._audio.clear()
        self._current = self._current_fitted = None

    def _push_picture(self, feed: IngestFeed, at_ms: float, frame: av.VideoFrame) -> None:
        if not self._takes_over(feed):
            return  # a backup standing by: mapped (its clock kept warm), not shown
        with self._lock:
            if self._feed is not feed:
                return
            if self._pictures and at_ms < self._pictures[-1][0]:
                self._pictures.clear()  # the clock went back: the newer mapping wins
            self._pictures.append((at_ms, frame))
            while len(self._pictures) > VIDEO_QUEUE_FRAMES:
                self._pictures.popleft()
                DROPPED.labels(self.config.name, "video").inc()

    def _audio_position(self, at_ms: float) -> int | None:
        if self._origin_ms is None:
            return None  # the channel has not pulled yet: no timeline to place sound on
        return round((at_ms - self._origin_ms) * self.sample_rate / 1000)

    def _push_sound(self, feed: IngestFeed, position: int, samples: NDArray[np.float32]) -> None:
        with self._lock:
            if self._feed is not feed:
                return
            if self._audio and position < self._audio[-1].end:
                # overlaps what is queued (a clock jumped back): the newer sound wins
                while self._audio and self._audio[-1].position >= position:
                    self._audio.pop()
                if self._audio and self._audio[-1].end > position:
                    last = self._audio[-1]
                    last.samples = last.samples[:, : position - last.position]
            self._audio.append(_AudioRun(position, samples))
            limit = AUDIO_QUEUE_MS * self.sample_rate // 1000
            while self._audio and self._audio[-1].end - self._audio[0].position > limit:
                self._audio.popleft()
                DROPPED.labels(self.config.name, "audio").inc()

    # -- channel side (ChannelSource) ---------------------------------------------------

    def video_frame(self, index: int, captured_ms: int) -> av.VideoFrame:
        with self._lock:
            self._origin_ms = captured_ms - index * 1000 // self.config.frame_rate
            while self._pictures and self._pictures[0][0] <= captured_ms:
                self._current = self._pictures.popleft()[1]
                self._current_fitted = None
            feed, picture, fitted = self._feed, self._current, self._current_fitted
            live = feed is not None and picture is not None and not feed.stale(clock.now_ms())
            if live:
                self._ever_live = True
                self.on_air.set()
            else:
                self.on_air.clear()
            kind = SlateKind.BACK if self._ever_live else SlateKind.STARTING
        if not live or picture is None:
            return self.slates.frame(kind)
        if fitted is None:
            fitted = fit_picture(picture, self.width, self.height)
            with self._lock:
                if self._current is picture:
                    self._current_fitted = fitted
        return fitted

    def audio_frame(self, index: int) -> av.AudioFrame:
        first = index * AAC_FRAME_SAMPLES
        end = first + AAC_FRAME_SAMPLES
        out = np.zeros((self.channels, AAC_FRAME_SAMPLES), np.float32)
        with self._lock:
            while self._audio and self._audio[0].end <= first:
                self._audio.popleft()  # its slot has passed
                DROPPED.labels(self.config.name, "audio").inc()
            for run in self._audio:
                if run.position >= end:
                    break
                lo, hi = max(run.position, first), min(run.end, end)
                taken = run.samples[:, lo - run.position : hi - run.position]
                out[:, lo - first : hi - first] = taken
            if self._feed is None or not self.on_air.is_set():
                out[:] = 0  # slate: silence (but keep the queue moving)
        layout = "stereo" if self.channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(out, format="fltp", layout=layout)
        frame.sample_rate = self.sample_rate
        frame.pts = first
        frame.time_base = Fraction(1, self.sample_rate)
        return frame


class IngestFeed:
    """One broadcaster's way into an :class:`IngestSource`; thread-safe to push into."""

    def __init__(self, source: IngestSource, shared_clock: bool, on_cut: Cut | None) -> None:
        self.source = source
        self.on_cut = on_cut
        self.detached = False
        self.attached_ms = clock.now_ms()
        self.last_arrival_ms: int | None = None
        self._video_clock = MediaClock()
        self._audio_clock = self._video_clock if shared_clock else MediaClock()
        self._resampler = av.AudioResampler(
            format="fltp",
            layout="stereo" if source.channels == 2 else "mono",
            rate=source.sample_rate,
        )
        self._next_audio: int | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.params: FeedParams | None = None  # known from the first picture
        self.declared_rate: float | None = None  # the frame rate the protocol declared

    def stale(self, now_ms: int) -> bool:
        """Nothing received for :data:`STALE_MS` (or since attaching, for a silent start)."""
        last = self.last_arrival_ms if self.last_arrival_ms is not None else self.attached_ms
        return now_ms - last > STALE_MS

    @property
    def resyncs(self) -> int:
        extra = self._audio_clock.resyncs if self._audio_clock is not self._video_clock else 0
        return self._video_clock.resyncs + extra

    def video(self, frame: av.VideoFrame, pts_s: float, arrival_ms: int | None = None) -> None:
        """A decoded picture stamped ``pts_s`` on the broadcaster's clock."""
        at_ms = self._stamp(self._video_clock, pts_s, arrival_ms)
        self.video_frames += 1
        if self.params is None:
            self.params = FeedParams(frame.width, frame.height, self.declared_rate)
            self.source._described(self)
            if self.detached:
                return
        self.source._push_picture(self, at_ms, frame)

    def audio(self, frame: av.AudioFrame, pts_s: float, arrival_ms: int | None = None) -> None:
        """Decoded sound stamped ``pts_s``; any format, resampled to the channel's."""
        at_ms = self._stamp(self._audio_clock, pts_s, arrival_ms)
        self.audio_frames += 1
        frame.pts = None  # the resampler need not keep the broadcaster's timestamps
        for out in self._resampler.resample(frame):
            samples = out.to_ndarray().astype(np.float32, copy=False)
            self._place_audio(at_ms, samples)
            at_ms += samples.shape[1] * 1000 / self.source.sample_rate

    def _stamp(self, media_clock: MediaClock, pts_s: float, arrival_ms: int | None) -> float:
        """The wall-clock playout time of media stamped ``pts_s``, arriving now."""
        arrival = clock.now_ms() if arrival_ms is None else arrival_ms
        before = media_clock.resyncs
        at_ms = media_clock.map(pts_s, arrival)
        if media_clock.resyncs != before:
            RESYNCS.labels(self.source.config.name).inc()
            log.info("channel %s: input clock re-anchored", self.source.config.name)
        self.last_arrival_ms = arrival
        return at_ms

    def _place_audio(self, at_ms: float, samples: NDArray[np.float32]) -> None:
        position = self.source._audio_position(at_ms)
        if position is None:
            return
        snap = AUDIO_SNAP_MS * self.source.sample_rate // 1000
        if self._next_audio is not None and abs(position - self._next_audio) <= snap:
            position = self._next_audio  # back to back: no click from rounding or jitter
        self._next_audio = position + samples.shape[1]
        self.source._push_sound(self, position, samples)

    def close(self) -> None:
        self.source.detach(self)

    def described(self) -> str:
        """The feed as an operator reads it: its picture, once one came."""
        return str(self.params) if self.params is not None else "connected"

    def cut(self, why: str) -> None:
        """Cut off by the source (evicted, the channel ended): the session is told ``why``."""
        self.detached = True
        if self.on_cut is not None:
            self.on_cut(why)
