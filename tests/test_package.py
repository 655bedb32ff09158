"""The packager: chunk boundaries on the grid, styp per segment, no holes after skips."""

from fractions import Fraction

from kernel.isobmff import iter_boxes
from live.cmaf import InitInfo, read_sample_durations, read_tfdt
from live.encode import EncodedUnit
from live.package import ChunkPackager
from live.timing import Timeline, UnitClock

FRAME = 512  # 30 fps in a 15360 timescale


def packager() -> ChunkPackager:
    clock = UnitClock(Timeline(2000, 200), Fraction(30))
    return ChunkPackager(clock, InitInfo(track_id=1, timescale=15360), FRAME, start_ms=0)


def unit(index: int) -> EncodedUnit:
    return EncodedUnit(index=index, data=bytes([index % 256]) * 10, sync=index % 60 == 0)


def test_a_chunk_is_emitted_with_its_last_frame_and_a_segment_starts_with_styp() -> None:
    pack = packager()
    emitted = [c for i in range(66) for c in pack.add(unit(i))]
    assert [(c.segment, c.chunk, c.last) for c in emitted][:2] == [(0, 0, False), (0, 1, False)]
    assert [(c.segment, c.chunk, c.last) for c in emitted][9:] == [(0, 9, True), (1, 0, False)]
    assert next(iter_boxes(emitted[0].data)).type == b"styp"
    assert next(iter_boxes(emitted[1].data)).type == b"prft"
    assert next(iter_boxes(emitted[10].data)).type == b"styp"
    assert read_tfdt(emitted[10].data) == 60 * FRAME


def test_skipped_frames_leave_no_hole_in_the_timeline() -> None:
    pack = packager()
    kept = [0, 1, 2, 9, 10, 11, 20, 21, 22, 23, 24, 25]  # gaps inside and across chunks
    emitted = [c for i in kept for c in pack.add(unit(i))] + pack.flush()
    covered = 0
    for chunk in emitted:
        assert read_tfdt(chunk.data) == covered
        covered += sum(read_sample_durations(chunk.data))
    assert covered == 26 * FRAME  # from frame 0 to the end of frame 25, without a gap
