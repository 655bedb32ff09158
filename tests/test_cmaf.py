"""CMAF boxes written by livemesh, read back by our reader and by FFmpeg."""

import io

import av

from kernel.isobmff import find_boxes, iter_boxes, read_prft_wallclock_ms
from live.cmaf import Sample, fragment, prft, read_tfdt, styp


def test_fragment_is_moof_then_mdat_with_the_samples() -> None:
    samples = [Sample(b"\x01" * 10, 512, True), Sample(b"\x02" * 7, 512, False)]
    data = fragment(sequence=3, track_id=1, base_media_time=30720, samples=samples)
    boxes = [b.type for b in iter_boxes(data)]
    assert boxes == [b"moof", b"mdat"]
    mdat = find_boxes(data, [b"mdat"])[0]
    assert mdat.payload(data) == b"\x01" * 10 + b"\x02" * 7
    assert read_tfdt(data) == 30720


def test_trun_data_offset_points_at_the_first_sample() -> None:
    data = fragment(1, 1, 0, [Sample(b"abc", 1, True)])
    trun = find_boxes(data, [b"moof", b"traf", b"trun"])[0]
    offset = int.from_bytes(data[trun.payload_start + 8 : trun.payload_start + 12], "big")
    assert data[offset : offset + 3] == b"abc"


def test_prft_round_trips_the_wall_clock() -> None:
    wallclock_ms = 1_795_624_482_983
    data = prft(track_id=1, wallclock_ms=wallclock_ms, media_time=0)
    assert read_prft_wallclock_ms(data) == wallclock_ms


def test_styp_declares_a_cmaf_dash_segment() -> None:
    box = next(iter_boxes(styp()))
    assert box.type == b"styp"
    assert b"msdh" in box.payload(styp()) and b"cmfs" in box.payload(styp())


def test_ffmpeg_decodes_our_fragments_after_its_own_init_segment() -> None:
    """The init comes from FFmpeg's muxer, the fragment from us: they must agree."""
    from kernel.channel_config import VideoRung
    from live.encode import VideoEncoder
    from live.source import TestPattern

    encoder = VideoEncoder(VideoRung("v", 320, 180, 300_000), frame_rate=30, segment_frames=30)
    pattern = TestPattern(320, 180, 30, 30)
    units = [u for i in range(30) for u in encoder.encode(pattern.frame(i, 0), keyframe=i == 0)]
    samples = [Sample(u.data, encoder.unit_duration, u.sync) for u in units]
    media = encoder.init_segment + styp() + fragment(1, encoder.track.track_id, 0, samples)
    with av.open(io.BytesIO(media)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 30
    assert frames[0].key_frame and (frames[0].width, frames[0].height) == (320, 180)
