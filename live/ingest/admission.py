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
from collections import OrderedDict
from dataclasses import dataclass

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


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated_ms: int

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now_ms: int) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now_ms)

    def refill(self, now_ms: int) -> None:
        elapsed_s = max(0, now_ms - self.updated_ms) / 1000
        self.tokens = min(self.burst, self.tokens + elapsed_s * self.rate_per_s)
        self.updated_ms = now_ms

    def take(self, now_ms: int) -> bool:
        self.refill(now_ms)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1 - self.tokens) / self.rate_per_s)


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
        self.client_rate, self.client_burst = client_rate, client_burst
        self.max_pending = max_pending
        self._global: TokenBucket | None = None
        self._global_rate, self._global_burst = global_rate, global_burst
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self.pending = 0

    def admit(self, client: str, now_ms: int) -> Verdict:
        """Whether ``client`` may start a session now; an admitted one holds a pending slot."""
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = TokenBucket.full(self.client_rate, self.client_burst, now_ms)
            self._clients[client] = bucket
            while len(self._clients) > MAX_CLIENTS_TRACKED:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        if not bucket.take(now_ms):
            return Verdict.CLIENT_LIMITED
        if self._global is None:
            self._global = TokenBucket.full(self._global_rate, self._global_burst, now_ms)
        if self.pending >= self.max_pending or not self._global.take(now_ms):
            return Verdict.OVERLOADED
        self.pending += 1
        return Verdict.ADMITTED

    def done(self) -> None:
        """An admitted attempt finished setting up (on air or refused)."""
        self.pending = max(0, self.pending - 1)

    def retry_after_s(self, client: str) -> int:
        """Whole seconds a limited client should wait (``Retry-After``), at least 1."""
        bucket = self._clients.get(client)
        wait = bucket.wait_s() if bucket is not None else 1.0
        return max(1, int(wait + 0.999))
