"""Admission of new ingest sessions: a flood of attempts never reaches the channels.

Every WHIP offer and every RTMP connection asks :class:`Admission` first, before
any key lookup, SDP parsing or FFmpeg listener is spent on it:

* per client (remote address), a token bucket of session attempts: over it the
  client is told to slow down (WHIP ``429 Too Many Requests`` with ``Retry-After``;
  RTMP: the connection is closed at once);
* for the whole process, a token bucket of attempts and a bound on attempts
  being set up at once: over either, ``503 Service Unavailable`` (the process
  is busy, not the client misbehaving).

Sessions already on air are never counted: admission only gates new ones, so a
flood costs the live channels nothing but the refusals.  Pure logic, time
passed in (``now_ms``), so it is tested without sockets.
"""

from __future__ import annotations

import enum

from kernel.ratelimit import TokenBucket, TokenBuckets

CLIENT_RATE_PER_S = 2.0  # session attempts per client and second, sustained
CLIENT_BURST = 6
GLOBAL_RATE_PER_S = 30.0  # session attempts of the whole process per second, sustained
GLOBAL_BURST = 60
MAX_PENDING = 8  # attempts being negotiated at once (SDP answer, RTMP handshake to publish)
MAX_CLIENTS_TRACKED = 10_000  # buckets kept; the least recently seen client is forgotten


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    CLIENT_LIMITED = "client_limited"  # -> 429
    OVERLOADED = "overloaded"  # -> 503


class Admission:
    """Rate and concurrency limits on new sessions; :meth:`done` releases a pending slot."""

    def __init__(
        self,
        client_rate: float = CLIENT_RATE_PER_S,
        client_burst: int = CLIENT_BURST,
        global_rate: float = GLOBAL_RATE_PER_S,
        global_burst: int = GLOBAL_BURST,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.max_pending = max_pending
        self._global: TokenBucket | None = None
        self._global_rate, self._global_burst = global_rate, global_burst
        self._clients = TokenBuckets(client_rate, client_burst, MAX_CLIENTS_TRACKED)
        self.pending = 0

    def admit(self, client: str, now_ms: int) -> Verdict:
        """Whether ``client`` may start a session now; an admitted one holds a pending slot."""
        now_s = now_ms / 1000
        if self._clients.take(client, now_s) > 0:
            return Verdict.CLIENT_LIMITED
        if self._global is None:
            self._global = TokenBucket(self._global_rate, self._global_burst, now_s)
        if self.pending >= self.max_pending or self._global.take(now_s) > 0:
            return Verdict.OVERLOADED
        self.pending += 1
        return Verdict.ADMITTED

    def done(self) -> None:
        """An admitted attempt finished setting up (on air or refused)."""
        self.pending = max(0, self.pending - 1)

    def retry_after_s(self, client: str) -> int:
        """Whole seconds a limited client should wait (``Retry-After``), at least 1."""
        return max(1, int(self._clients.wait_s(client) + 0.999))
