"""Rendezvous (highest-random-weight) hashing of an object path over parents.

Every node computes the same order for the same path and parent set, so an object
is fetched from the origin once per shield set; when a parent drops out only its
own objects move.  The hash is a keyed digest, stable across processes (never
Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def score(parent: str, key: str) -> int:
    digest = hashlib.blake2b(f"{parent}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def order(parents: Sequence[str], key: str) -> list[str]:
    """``parents`` sorted by their weight for ``key``, best first."""
    return sorted(parents, key=lambda p: score(p, key), reverse=True)
