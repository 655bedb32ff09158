"""Weighted traffic split: extra instances of a dependency with a weight each (a canary).

A running process learns of a split from the JSON file named by ``LIVEMESH_SPLIT_FILE``
(``{dependency: {address: weight}}``), re-read when it changes, as the fault file is: the
``livemesh canary`` command adds a canary instance to a dependency at a small weight, then
removes it (rollback) or raises it (promotion) while the clients run. Instances the
resolver gives have weight 1. ``dependency`` is what the balancer calls it: the target as
configured (``127.0.0.1:50057``) or the registry service (``playback``).

The pick is nginx's smooth weighted round robin: deterministic, so a canary at weight
``w`` next to ``n`` instances of weight 1 gets exactly ``w / (n + w)`` of the first
attempts, spread evenly rather than in bursts (a random pick would, at 0.5 %, sometimes
send it several calls in a row).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kernel.config import ResilienceSettings, load
from kernel.watched_file import WatchedFile, write_json

SPLIT_FILE_ENV = "LIVEMESH_SPLIT_FILE"

Weights = dict[str, float]


@dataclass
class SmoothWeighted:
    """nginx's smooth weighted round robin over the candidates of each pick (pure)."""

    current: dict[str, float] = field(default_factory=dict)

    def choose(self, candidates: list[str], weights: Mapping[str, float]) -> str:
        """The next of ``candidates`` (non-empty); an address without a weight has 1."""
        total = 0.0
        best = candidates[0]
        for address in candidates:
            weight = weights.get(address, 1.0)
            total += weight
            self.current[address] = self.current.get(address, 0.0) + weight
            if self.current[address] > self.current[best]:
                best = address
        self.current[best] -= total
        return best


def read_split(path: str) -> dict[str, Weights]:
    """The split file's content; a missing file is no split."""
    try:
        with open(path) as file:
            raw = json.load(file)
    except FileNotFoundError:
        return {}
    return {
        str(dependency): {str(a): float(w) for a, w in extra.items() if float(w) > 0}
        for dependency, extra in raw.items()
    }


def write_split(path: str, split: Mapping[str, Mapping[str, float]]) -> None:
    """Set the split of every process that watches ``path`` (atomically replaced)."""
    write_json(path, {d: dict(extra) for d, extra in split.items()})


class SplitFile:
    """One process's view of the split file, looked at no more often than ``every_s``
    (a pick must not stat a file per call) and re-read when it changes."""

    def __init__(
        self, path: str, every_s: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.file: WatchedFile[dict[str, Weights]] = WatchedFile(path, read_split, {})
        self.every_s, self.clock = every_s, clock
        self._next_look = 0.0

    def extra(self, dependency: str) -> Weights:
        """The extra instances of ``dependency`` and their weights, as of now."""
        now = self.clock()
        if now >= self._next_look:
            self._next_look = now + self.every_s
            self.file.current()
        return self.file.value.get(dependency, {})


def from_settings() -> SplitFile | None:
    """The split file this process's settings name (``LIVEMESH_SPLIT_FILE``), if any."""
    path = load(ResilienceSettings).settings.split_file
    return SplitFile(path) if path else None
