"""Defects injected into a redundant live pipeline on purpose (chaos): the rule file.

The load rig (:mod:`loadrig.chaos`) writes the rules to the JSON file named by
``LIVEMESH_PIPELINE_FAULTS``; every pipeline process re-reads it when it changes (one
``stat`` per chunk) and breaks its own chunks as the rules naming it say, before its
packager inspects them (:mod:`live.pipeline_faults`).  So the rig proves that the origin
never serves what the packager found wrong, with the code paths of a real failure.
Here only the file's format, shared by the writer and the readers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kernel.watched_file import WatchedFile, write_json

PIPELINE_FAULTS_ENV = "LIVEMESH_PIPELINE_FAULTS"
PIPELINE_FAULTS_NAME = "pipeline-faults.json"  # beside the gRPC fault file, in the rig
# truncate: each chunk cut in half (a writer that died); drop-frames: each chunk's last
# access unit left out (an encoder that fell behind and skipped a frame)
DEFECT_KINDS = ("truncate", "drop-frames")


@dataclass(frozen=True)
class DefectRule:
    pipeline: str  # "a", "b"
    kind: str  # one of DEFECT_KINDS
    until_ms: int  # wall clock (kernel.clock): the rule lapses then, whoever clears it


def write_rules(path: str | Path, rules: list[DefectRule]) -> None:
    """Replace the file's rules at once (a reader never sees half a file)."""
    for rule in rules:
        if rule.kind not in DEFECT_KINDS:
            raise ValueError(f"defect kind must be one of {', '.join(DEFECT_KINDS)}")
    write_json(path, [asdict(r) for r in rules])


def rule_file(path: str) -> WatchedFile[list[DefectRule]]:
    """The rules of ``path``, re-read only when it changed (none while it is absent)."""
    return WatchedFile(path, lambda p: _parse(Path(p).read_text()), [])


def _parse(text: str) -> list[DefectRule]:
    try:
        raw = json.loads(text)
        return [DefectRule(str(r["pipeline"]), str(r["kind"]), int(r["until_ms"])) for r in raw]
    except (ValueError, KeyError, TypeError):
        return []  # a rule file being rewritten by hand: no defects rather than a crash
