"""Exponential backoff with full jitter (pure: the random source is passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (1-based): uniform in ``[0, min(cap, base·multiplier^(n-1))]``.

    Full jitter (AWS architecture blog's name) spreads a burst of failed callers
    across the whole interval, so their retries do not arrive together.
    """

    base_s: float = 0.01
    cap_s: float = 0.5
    multiplier: float = 2.0

    def ceiling(self, retry: int) -> float:
        return min(self.cap_s, self.base_s * self.multiplier ** max(0, retry - 1))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(retry))


PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRPC's retry trailer (A6): when to try again


def pushback_s(trailing: object) -> float | None:
    """``grpc-retry-pushback-ms`` from trailing metadata: seconds, ``-1`` for "do not retry",
    ``None`` when the server sent none."""
    for key, value in trailing or ():  # type: ignore[attr-defined]
        if key == PUSHBACK_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                ms = int(text)
            except ValueError:
                return -1.0
            return -1.0 if ms < 0 else ms / 1000.0
    return None
