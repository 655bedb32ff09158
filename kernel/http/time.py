"""``/time``: the stack's clock for players (the MPD's ``UTCTiming``).

The scheme is ``urn:mpeg:dash:utc:http-iso:2014``: the body is the current UTC time
as ISO 8601 (xs:dateTime), here to the millisecond with ``Z``.  Origin and edges
answer it with this one function, so a player syncs the same way with either.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

TIME_PATH = "/time"
TIME_CACHE_CONTROL = "no-store"  # a clock read must never come from a cache
_EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


def http_iso(now_ms: int) -> str:
    """UTC wall-clock ``now_ms`` as ``YYYY-MM-DDThh:mm:ss.mmmZ``."""
    stamp = _EPOCH_ZERO + timedelta(milliseconds=now_ms)  # exact: no float seconds
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
