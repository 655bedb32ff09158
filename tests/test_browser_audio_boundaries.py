"""Chromium buffers every audio chunk the packager cuts to past its part boundary.

hls.js holds an audio SourceBuffer's buffered end against the playlist's part and
segment boundaries (``DURATION`` of the chunk grid) to choose what to load next; a
buffered end short of a segment's end makes it take the segment it has (whole) for the
next one, and after a Pathway switch, whose playlist marks no part as loaded, its loop
guard leaves the audio loader idle until the next segment is whole: a stall. Chromium
keeps media time in whole microseconds, truncated, and an AAC frame at 48 kHz is
21,333.3 µs, so a chunk ending exactly on the grid (75 frames: 1.6 s) is buffered to
1.599999 s. The packager's real encoder, packager and boxes are appended through MSE in
Chromium, as hls.js appends them; no player is involved. Set-up: ``make browser-deps``.
"""

from __future__ import annotations

import base64

import pytest

from kernel.channel_config import ChannelConfig
from live.encode import AudioEncoder
from live.package import ChunkPackager
from live.source import Tone
from live.timing import UnitClock
from player.harness import chromium_page, missing_setup

pytestmark = pytest.mark.timeout(120)  # one AAC encoder and Chromium, on a busy machine

SEGMENTS = 9  # 18 s: the grid meets an AAC frame boundary every 1.6 s, a segment's every 8 s

# Appends the init segment and each chunk in turn, as hls.js does; the buffered end after each.
APPEND_ALL = """async ([init, chunks]) => {
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const video = document.createElement('video');
  const source = new MediaSource();
  video.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener('sourceopen', resolve, { once: true }));
  const buffer = source.addSourceBuffer('audio/mp4; codecs="mp4a.40.2"');
  const append = (data) => new Promise((resolve, reject) => {
    buffer.addEventListener('updateend', resolve, { once: true });
    buffer.addEventListener('error', reject, { once: true });
    buffer.appendBuffer(bytes(data));
  });
  await append(init);
  const ends = [];
  for (const chunk of chunks) {
    await append(chunk);
    ends.push(buffer.buffered.end(buffer.buffered.length - 1));
  }
  return ends;
}"""


def packaged_audio(config: ChannelConfig, segments: int) -> tuple[bytes, list[bytes]]:
    """The audio rendition's init segment and its first ``segments`` segments' chunks, as
    the channel makes them (its encoder, clock and packager on the test tone)."""
    encoder = AudioEncoder(config.audio)
    clock = UnitClock(config.timeline, encoder.units_per_second)
    packager = ChunkPackager(clock, encoder.track, encoder.unit_duration, start_ms=0)
    tone = Tone(config.audio.sample_rate, config.audio.channels)
    chunks: list[bytes] = []
    index = 0
    while len(chunks) < segments * config.timeline.chunks_per_segment:
        for unit in encoder.encode(tone.frame(index)):
            chunks += [c.data for c in packager.add(unit)]
        index += 1
    return encoder.init_segment, chunks


def test_every_audio_chunk_is_buffered_past_its_part_boundary() -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    config = ChannelConfig("boundaries")
    init, chunks = packaged_audio(config, SEGMENTS)
    encoded = [base64.b64encode(c).decode() for c in chunks]
    with chromium_page() as (page, log):
        page.goto("about:blank")
        ends = page.evaluate(APPEND_ALL, [base64.b64encode(init).decode(), encoded])
    assert len(ends) == len(chunks), log.text()
    per_segment = config.timeline.chunks_per_segment
    short = [
        (flat, end)
        for flat, end in enumerate(ends)
        if end <= config.timeline.chunk_start_ms(*divmod(flat + 1, per_segment)) / 1000
    ]
    assert short == [], short  # (chunk, buffered end) ending on or before its boundary
