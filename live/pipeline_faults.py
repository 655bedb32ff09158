"""A redundant pipeline breaking its own chunks on the chaos rig's orders.

:class:`InjectedDefects` is a :data:`live.channel.Tamper`: it applies the rules of the
file named by ``LIVEMESH_PIPELINE_FAULTS`` (:mod:`kernel.defect_faults`) that name this
pipeline to each chunk before the packager inspects it, so the defect is found and
recorded (:mod:`live.inspect`) exactly as a real one would be.  Both kinds leave boxes
a parser reads, but not the chunk the timeline asks for.  A *delayed* pipeline needs no
rule: the rig pauses its process (SIGSTOP), and it comes back late and behind.
"""

from __future__ import annotations

import dataclasses
import os
import struct

from kernel import clock
from kernel.defect_faults import PIPELINE_FAULTS_ENV, rule_file
from kernel.isobmff import find_boxes
from live.cmaf import Sample, fragment, read_tfdt, styp
from live.inspect import SAMPLE_IS_NON_SYNC
from live.package import Chunk


class InjectedDefects:
    """The rig's defects for one pipeline, applied chunk by chunk."""

    def __init__(self, path: str, pipeline: str) -> None:
        self.rules = rule_file(path)
        self.pipeline = pipeline

    @classmethod
    def from_env(cls, pipeline: str) -> InjectedDefects | None:
        path = os.environ.get(PIPELINE_FAULTS_ENV)
        return cls(path, pipeline) if path else None

    def __call__(self, rep: str, chunk: Chunk) -> Chunk:
        now = clock.now_ms()
        for rule in self.rules.current():
            if rule.pipeline == self.pipeline and now < rule.until_ms:
                if rule.kind == "truncate":
                    return dataclasses.replace(chunk, data=chunk.data[: len(chunk.data) // 2])
                return dataclasses.replace(chunk, data=without_last_frame(chunk.data))
        return chunk


def without_last_frame(data: bytes) -> bytes:
    """The chunk (``[styp] [prft] moof mdat`` as the packager writes it) less its last
    access unit: well-formed, one frame short."""
    mfhd = find_boxes(data, [b"moof", b"mfhd"])[0]
    (sequence,) = struct.unpack_from(">I", data, mfhd.payload_start + 4)
    tfhd = find_boxes(data, [b"moof", b"traf", b"tfhd"])[0]
    (track_id,) = struct.unpack_from(">I", data, tfhd.payload_start + 4)
    trun = find_boxes(data, [b"moof", b"traf", b"trun"])[0]
    (count,) = struct.unpack_from(">I", data, trun.payload_start + 4)
    mdat = find_boxes(data, [b"mdat"])[0]
    samples, at = [], mdat.payload_start
    for i in range(count - 1):
        duration, size, flags = struct.unpack_from(">III", data, trun.payload_start + 12 + 12 * i)
        samples.append(Sample(data[at : at + size], duration, not flags & SAMPLE_IS_NON_SYNC))
        at += size
    head = styp() if data[4:8] == b"styp" else b""
    return head + fragment(sequence, track_id, read_tfdt(data), samples)
