"""IngestSource without sockets: clocks, slate, frame-rate conversion, A/V placement."""

from __future__ import annotations

import av
import numpy as np
import pytest

from live.ingest.decode_queue import BoundedDecodeQueue, is_keyframe
from live.ingest.feed_params import FeedParams, disagreement
from live.ingest.ingest_source import STALE_MS, ChannelBusy, ChannelEnded, IngestSource
from live.ingest.media_clock import PLAYOUT_DELAY_MS, MediaClock
from tests.live_helpers import small_config

START_MS = 1_000_000  # the channel's media time 0, on the wall clock


def picture(value: int, width: int = 320, height: int = 240) -> av.VideoFrame:
    planes = np.full((height * 3 // 2, width), 128, np.uint8)
    planes[:height] = value
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def luma(frame: av.VideoFrame) -> int:
    return int(frame.to_ndarray()[frame.height // 2, frame.width // 2])


def sound(level: float, samples: int = 960, rate: int = 48_000) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.full((2, samples), level, np.float32), format="fltp", layout="stereo"
    )
    frame.sample_rate = rate
    return frame


def test_the_clock_absorbs_jitter_and_re_anchors_on_jumps() -> None:
    media = MediaClock()
    assert media.map(10.0, 5000) == 5000 + PLAYOUT_DELAY_MS
    # late and early arrivals within the playout delay keep the mapping exact
    assert media.map(10.1, 5180) == 5100 + PLAYOUT_DELAY_MS
    assert media.map(10.2, 5200) == 5200 + PLAYOUT_DELAY_MS
    assert media.resyncs == 0
    # the broadcaster restarts its clock at 0: re-anchored on arrival
    assert media.map(0.0, 5300) == 5300 + PLAYOUT_DELAY_MS
    # a frame far later than its timestamp says: re-anchored, never played in the past
    assert media.map(0.1, 6000) == 6000 + PLAYOUT_DELAY_MS
    assert media.resyncs == 2


def test_slate_until_a_broadcaster_then_its_pictures_at_the_channel_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = small_config("unit")
    source = IngestSource(config)
    now = [START_MS]
    monkeypatch.setattr("kernel.clock.now_ms", lambda: now[0])
    slate = source.video_frame(0, START_MS)
    assert (slate.width, slate.height) == (640, 360)
    feed = source.attach(shared_clock=True)
    # a 60 fps broadcaster, arriving on time: pictures 0..59 with luma 100 + i
    for i in range(60):
        feed.video(picture(100 + i), i / 60, START_MS + i * 1000 // 60)
    now[0] = START_MS + 1000
    shown = [luma(source.video_frame(i, START_MS + i * 1000 // 30)) for i in range(30)]
    # frame i (captured at i/30 s) shows the newest picture due by then: 60 -> 30 fps drops
    first_due = PLAYOUT_DELAY_MS * 30 // 1000 + 1
    assert shown[first_due] in range(100, 104)
    steps = np.diff(shown[first_due:])
    assert set(steps.tolist()) <= {1, 2, 3}  # 60 -> 30 fps: about every other picture
    assert source.on_air.is_set()
    # the broadcaster is scaled and letterboxed (4:3 into 16:9) to the top rung's size
    frame = source.video_frame(30, START_MS + 1000)
    assert (frame.width, frame.height) == (640, 360)
    assert frame.to_ndarray()[180, 10] == 16  # black bar at the side
    # a second broadcaster is refused while the first is live, admitted once it is stale
    with pytest.raises(ChannelBusy):
        source.attach(shared_clock=True)
    now[0] += STALE_MS + 1
    assert luma(source.video_frame(90, START_MS + 3000)) != luma(frame)  # slate again
    assert not source.on_air.is_set()
    evicted: list[str] = []
    feed.on_cut = evicted.append
    successor = source.attach(shared_clock=True)
    assert evicted == ["a new broadcaster took the channel over"] and feed.detached
    # the channel ends: its broadcaster is cut, told why, and no other attaches
    ended: list[str] = []
    successor.on_cut = ended.append
    source.end()
    assert ended == ["channel unit has ended"] and successor.detached
    assert not source.publishing
    with pytest.raises(ChannelEnded):
        source.attach(shared_clock=True)


def test_sound_lands_on_the_output_sample_its_timestamp_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = IngestSource(small_config("unit"))
    now = [START_MS]
    monkeypatch.setattr("kernel.clock.now_ms", lambda: now[0])
    source.video_frame(0, START_MS)  # the channel has started: its timeline exists
    feed = source.attach(shared_clock=True)
    # 44.1 kHz input starting at arrival START_MS: it plays from START_MS + delay
    for i in range(20):
        feed.video(picture(200), i * 0.05, START_MS + i * 50)
        feed.audio(sound(0.5, 2205, 44_100), i * 0.05, START_MS + i * 50)
    now[0] = START_MS + 600
    source.video_frame(18, START_MS + 600)  # on air
    heard = np.concatenate([source.audio_frame(k).to_ndarray() for k in range(12)], axis=1)
    first_sound = int(np.argmax(np.abs(heard[0]) > 0.25))
    # the first sample plays with the first picture (both at START_MS + delay): within 2 ms
    assert abs(first_sound - PLAYOUT_DELAY_MS * 48) <= 96, first_sound
    assert np.all(np.abs(heard[:, first_sound + 64 :] - 0.5) < 0.05)  # no gaps, no clicks


def test_the_decode_queue_drops_to_a_keyframe_and_asks_for_one() -> None:
    class Codec:
        name = "H264"

    class Encoded:
        def __init__(self, key: bool) -> None:
            nal = 5 if key else 1
            self.data = b"\x00\x00\x00\x01" + bytes([0x60 | nal]) + b"\x88" * 10

    requests: list[bool] = []
    decode_queue = BoundedDecodeQueue("video", 4, lambda: requests.append(True))
    for _ in range(4):
        decode_queue.put((Codec, Encoded(key=False)))
    decode_queue.put((Codec, Encoded(key=False)))  # over the bound: all goes, PLI
    assert decode_queue.qsize() == 0 and requests == [True]
    decode_queue.put((Codec, Encoded(key=False)))  # still no keyframe: dropped
    assert decode_queue.qsize() == 0
    decode_queue.put((Codec, Encoded(key=True)))
    decode_queue.put((Codec, Encoded(key=False)))
    assert decode_queue.qsize() == 2 and decode_queue.dropped == 6
    assert is_keyframe("VP8", b"\x10\x02") and not is_keyframe("VP8", b"\x11\x02")


def test_the_playout_delay_shrinks_back_after_a_jitter_spike() -> None:
    media = MediaClock()
    for i in range(10):  # 20 ms frames on time
        assert media.map(i * 0.02, 1000 + i * 20) == 1000 + i * 20 + PLAYOUT_DELAY_MS
    # a spike: frames 10..29 are held up and arrive together at 1600 (frame 10 was due at
    # 1200): re-anchored on that arrival, every later on-time frame now waits 400 ms more
    assert media.map(0.2, 1600) == 1600 + PLAYOUT_DELAY_MS
    for i in range(11, 30):
        media.map(i * 0.02, 1600)
    buffered = [media.map(i * 0.02, 1000 + i * 20) - (1000 + i * 20) for i in range(30, 300)]
    assert buffered[0] > PLAYOUT_DELAY_MS + 300  # the spike's delay, at first
    assert buffered[-1] == PLAYOUT_DELAY_MS  # and given back once arrivals are steady
    assert media.shrinks == 1


def test_a_backup_feed_must_carry_the_primarys_picture() -> None:
    primary = FeedParams(640, 360, 30.0)
    assert disagreement(primary, FeedParams(640, 360, 30000 / 1001)) is not None
    assert disagreement(primary, FeedParams(640, 360, 30.0)) is None
    assert disagreement(primary, FeedParams(640, 360)) is None  # WHIP declares no rate
    said = disagreement(primary, FeedParams(1280, 720, 30.0))
    assert said == "the backup feed is 1280x720, the primary 640x360"
    said = disagreement(primary, FeedParams(640, 360, 25.0))
    assert said == "the backup feed runs at 25 fps, the primary at 30"


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The wall clock (ms), moved by the test."""
    moment = [START_MS]
    monkeypatch.setattr("kernel.clock.now_ms", lambda: moment[0])
    return moment


def test_a_backup_that_disagrees_is_cut_and_one_that_agrees_takes_over_a_stale_primary(
    now: list[int],
) -> None:
    source = IngestSource(small_config("dual"))
    cuts: dict[str, list[str]] = {"primary": [], "wrong": [], "right": []}
    primary = source.attach(shared_clock=True, on_cut=cuts["primary"].append)
    primary.video(picture(100), 0.0)
    with pytest.raises(ChannelBusy):  # not a backup: a second broadcaster
        source.attach(shared_clock=True)

    wrong = source.attach(shared_clock=True, on_cut=cuts["wrong"].append, backup=True)
    wrong.video(picture(200, 640, 480), 0.0)
    assert cuts["wrong"] == ["the backup feed is 640x480, the primary 320x240"]
    assert source.refused == cuts["wrong"][0] and wrong.detached

    right = source.attach(shared_clock=True, on_cut=cuts["right"].append, backup=True)
    with pytest.raises(ChannelBusy):  # one backup at a time
        source.attach(shared_clock=True, backup=True)
    for i in range(3):  # standing by: mapped, not shown
        now[0] += 33
        primary.video(picture(100), i / 30)
        right.video(picture(200), i / 30)
    shown = source.video_frame(30, now[0] + PLAYOUT_DELAY_MS)
    assert luma(shown) == 100 and cuts["right"] == [] and not right.detached

    now[0] += STALE_MS + 1  # the primary's encoder died; the backup's frames still come
    right.video(picture(200), (now[0] - START_MS) / 1000)
    assert cuts["primary"] == ["the backup feed took over"] and primary.detached
    assert luma(source.video_frame(120, now[0] + 2 * PLAYOUT_DELAY_MS)) == 200
    source.end()
    assert cuts["right"] == ["channel dual has ended"]
