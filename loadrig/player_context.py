"""What the virtual players of one worker process share: the gateway, the account pool,
one HTTP session, the seeded random source, and the set of media paths they fetched."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import aiohttp

from loadrig.scenario import PlayerSettings


@dataclass
class PlayerContext:
    """What the players of one worker process share."""

    gateway: str
    settings: PlayerSettings
    http: aiohttp.ClientSession
    tokens: list[str]  # access tokens of the account pool (reused)
    credentials: list[tuple[str, str]]  # (email, password) of the pool, for fresh sign-ins
    rng: random.Random = field(default_factory=random.Random)
    # media paths the players fetched (sans token), one set per worker rather than one per
    # viewer: every viewer of a rung fetches the same paths
    objects: set[str] = field(default_factory=set)
