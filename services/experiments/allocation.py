"""Which cell an account is in: a pure function of (salt, account, weights).

The account id and the experiment's salt are hashed with SHA-256 (never Python's
``hash()``, which is randomised per process), the first 8 bytes read as a number in
[0, 1), and that point falls in one cell's slice of the weights laid end to end. Every
process, every restart and every language that can SHA-256 puts an account in the
same cell; a new salt per experiment decorrelates one experiment's cells from another's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SCALE = float(1 << 64)


def bucket(salt: str, account: str) -> float:
    """The account's point in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}\n{account}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


def cell_index(salt: str, account: str, weights: Sequence[int]) -> int:
    """The index of the account's cell among cells of ``weights`` (all positive)."""
    point = bucket(salt, account) * sum(weights)
    edge = 0
    for i, weight in enumerate(weights):
        edge += weight
        if point < edge:
            return i
    return len(weights) - 1  # (a float rounding at the very top)
