"""The timing model: chunk grid, access-unit mapping, audio drift."""

from fractions import Fraction

import pytest

from live.timing import Timeline, UnitClock, live_edge_segment

AAC_48K = Fraction(48000, 1024)


def test_video_chunks_hold_whole_frames() -> None:
    clock = UnitClock(Timeline(2000, 200), Fraction(30))
    assert clock.chunk_units(0, 0) == range(0, 6)
    assert clock.chunk_units(1, 9) == range(114, 120)
    assert clock.chunk_of(59) == (0, 9)
    assert clock.chunk_of(60) == (1, 0)


def test_an_audio_chunk_ends_on_the_first_frame_after_its_nominal_end() -> None:
    clock = UnitClock(Timeline(2000, 200), AAC_48K)
    # 2 s is 93.75 AAC frames: segment 1 starts at frame 94; 6 s is 281.25 -> 282 (not 281)
    assert clock.chunk_units(1, 0).start == 94
    assert clock.chunk_units(3, 0).start == 282
    # 1.6 s is 75 frames exactly: the chunk ending there takes the 76th (a browser buffers
    # 75 frames to 1.599999 s, short of the part boundary)
    assert clock.chunk_units(0, 7) == range(66, 76)
    assert clock.chunk_units(0, 0).start == 0


def test_audio_runs_past_every_boundary_by_under_a_frame_and_never_drifts() -> None:
    clock = UnitClock(Timeline(2000, 200), AAC_48K)
    frame_ms = Fraction(1024, 48)
    for flat in range(1, 500_000, 997):
        segment, chunk = divmod(flat, 10)
        late_ms = clock.chunk_units(segment, chunk).start * frame_ms - flat * 200
        assert Fraction(8, 3) <= late_ms <= frame_ms  # 8/3 ms: the grid's closest approach


@pytest.mark.parametrize("unit", [0, 1, 9, 10, 93, 94, 187, 188, 10_000, 123_457])
def test_chunk_of_inverts_chunk_units(unit: int) -> None:
    clock = UnitClock(Timeline(2000, 200), AAC_48K)
    segment, chunk = clock.chunk_of(unit)
    assert unit in clock.chunk_units(segment, chunk)


def test_every_audio_unit_lands_in_exactly_one_chunk() -> None:
    clock = UnitClock(Timeline(2000, 200), AAC_48K)
    covered = [u for n in range(3) for k in range(10) for u in clock.chunk_units(n, k)]
    assert covered == list(range(len(covered)))


def test_bad_timelines_are_refused() -> None:
    with pytest.raises(ValueError):
        Timeline(2000, 300)
    with pytest.raises(ValueError):
        Timeline(0, 0)


def test_live_edge_segment() -> None:
    timeline = Timeline(2000, 200)
    assert live_edge_segment(now_ms=10_000 + 4_100, start_ms=10_000, timeline=timeline) == 2
