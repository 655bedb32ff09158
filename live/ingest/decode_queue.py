"""aiortc's decoder input, bounded, so a receiver that falls behind catches up.

aiortc decodes each receiver on a thread behind an unbounded queue: a slow decoder
would fall ever further behind live.  :class:`BoundedDecodeQueue` replaces it: when
video decoding falls :data:`DECODE_QUEUE_FRAMES` behind, the backlog is dropped,
frames are skipped up to the next keyframe and a keyframe is requested with PLI
(through the same path aiortc uses after a decode error).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from prometheus_client import Counter

log = logging.getLogger("livemesh.ingest.whip")

DECODE_QUEUE_FRAMES = 30  # encoded frames waiting for the decoder, at most (video)
AUDIO_DECODE_QUEUE_FRAMES = 50  # 1 s of 20 ms Opus frames

DECODE_DROPS = Counter(
    "livemesh_whip_decode_drops", "Encoded frames dropped to keep decoding real-time", ["kind"]
)


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether an encoded frame (as aiortc reassembles it) starts a decodable picture."""
    if codec == "VP8":
        return bool(data) and not data[0] & 0x01  # P bit clear: key frame
    if codec == "H264":  # Annex B: an IDR slice or a parameter set starts it
        at = data.find(b"\x00\x00\x01")
        while at != -1 and at + 3 < len(data):
            if data[at + 3] & 0x1F in (5, 7):
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
    return False


class BoundedDecodeQueue(queue.Queue[Any]):
    """aiortc's decoder input, bounded: never more than ``limit`` frames behind.

    ``put`` is called on the event loop for every reassembled frame, ``get`` on
    the decoder thread.  Video over the limit: the backlog goes, frames are
    skipped up to the next keyframe, and ``request_keyframe`` is called once.
    Audio over the limit: the oldest frame goes.
    """

    def __init__(self, kind: str, limit: int, request_keyframe: Callable[[], None]) -> None:
        super().__init__()
        self.kind, self.limit = kind, limit
        self.request_keyframe = request_keyframe
        self.waiting_for_keyframe = False
        self.dropped = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # aiortc's stop signal
            super().put(item)
            return
        codec, encoded = item
        if self.kind == "video":
            key = is_keyframe(codec.name, encoded.data)
            if self.waiting_for_keyframe and not key:
                self._drop(1)
                return
            self.waiting_for_keyframe = False
            if self.qsize() >= self.limit:
                with self.mutex:
                    backlog = len(self.queue)
                    self.queue.clear()
                self._drop(backlog)
                if not key:
                    self._drop(1)
                    self.waiting_for_keyframe = True
                    self.request_keyframe()
                    return
        elif self.qsize() >= self.limit:
            with contextlib.suppress(queue.Empty):
                self.get_nowait()
                self._drop(1)
        super().put(item)

    def _drop(self, count: int) -> None:
        self.dropped += count
        DECODE_DROPS.labels(self.kind).inc(count)


def bound_decoder(receiver: RTCRtpReceiver) -> BoundedDecodeQueue | None:
    """Swap the receiver's unbounded decode queue for a bounded one, before it starts.

    aiortc keeps the queue and its decode-error event as private attributes; if a
    release renames them this returns ``None`` and logs, and decoding stays
    unbounded rather than broken.
    """
    queue_attr, error_attr = "_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__decoder_error"
    error_event = getattr(receiver, error_attr, None)
    if not hasattr(receiver, queue_attr) or not isinstance(error_event, threading.Event):
        log.warning("aiortc internals changed: the decode queue stays unbounded")
        return None
    if getattr(receiver, "_RTCRtpReceiver__decoder_thread", None) is not None:
        return None  # already decoding
    limit = DECODE_QUEUE_FRAMES if receiver.track.kind == "video" else AUDIO_DECODE_QUEUE_FRAMES
    # a set decode-error event makes aiortc send a PLI with the next packet
    bounded = BoundedDecodeQueue(receiver.track.kind, limit, error_event.set)
    setattr(receiver, queue_attr, bounded)
    return bounded
