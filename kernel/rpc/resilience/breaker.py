"""Circuit breaker per dependency: a pure state machine (clock injected, no I/O).

CLOSED counts the last ``window`` outcomes; once ``min_calls`` are in and the
failure rate or the slow-call rate reaches its threshold it goes OPEN. OPEN
refuses every attempt for ``open_s``, then HALF_OPEN lets ``probes`` attempts
through: all of them fine → CLOSED with a fresh window; any failure or slow
call → OPEN again. Every change calls ``on_change(old, new)`` (metrics, logs).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        window: int = 50,
        min_calls: int = 10,
        failure_rate: float = 0.5,
        slow_call_s: float = 1.0,
        slow_rate: float = 0.8,
        open_s: float = 5.0,
        probes: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State, State], None] | None = None,
    ) -> None:
        self.min_calls = min_calls
        self.failure_rate = failure_rate
        self.slow_call_s = slow_call_s
        self.slow_rate = slow_rate
        self.open_s = open_s
        self.probes = probes
        self.clock = clock
        self.on_change = on_change
        self.state = State.CLOSED
        self._window: deque[tuple[bool, bool]] = deque(maxlen=window)  # (failed, slow)
        self._failures = 0  # in the window, kept as outcomes come and go (O(1) per call)
        self._slows = 0
        self._opened_at = 0.0
        self._probes_out = 0
        self._probes_ok = 0

    def _set_state(self, new: State) -> None:
        old, self.state = self.state, new
        if new is State.OPEN:
            self._opened_at = self.clock()
        if new is State.HALF_OPEN:
            self._probes_out = self._probes_ok = 0
        if new is State.CLOSED:
            self._window.clear()
            self._failures = self._slows = 0
        if old is not new and self.on_change is not None:
            self.on_change(old, new)

    def current(self) -> State:
        """The state now (OPEN turns HALF_OPEN once ``open_s`` has passed)."""
        if self.state is State.OPEN and self.clock() - self._opened_at >= self.open_s:
            self._set_state(State.HALF_OPEN)
        return self.state

    def try_acquire(self) -> bool:
        """May an attempt go out now? In HALF_OPEN each True is one of the probes."""
        state = self.current()
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self._probes_out < self.probes:
            self._probes_out += 1
            return True
        return False

    def release(self) -> None:
        """An acquired attempt ended with no verdict (cancelled, e.g. a hedge's loser)."""
        if self.state is State.HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1

    def record(self, failed: bool, seconds: float) -> None:
        """The outcome of an acquired attempt."""
        slow = seconds >= self.slow_call_s
        if self.state is State.HALF_OPEN:
            if failed or slow:
                self._set_state(State.OPEN)
                return
            self._probes_ok += 1
            if self._probes_ok >= self.probes:
                self._set_state(State.CLOSED)
            return
        if self.state is State.OPEN:
            return  # an attempt from before the trip; the window restarts on closing
        window = self._window
        if len(window) == window.maxlen:
            gone_failed, gone_slow = window[0]  # pushed out by the append below
            self._failures -= gone_failed
            self._slows -= gone_slow
        window.append((failed, slow))
        self._failures += failed
        self._slows += slow
        n = len(window)
        if n < self.min_calls:
            return
        if self._failures / n >= self.failure_rate or self._slows / n >= self.slow_rate:
            self._set_state(State.OPEN)

    def rates(self) -> tuple[float, float]:
        """(failure rate, slow-call rate) of the current window."""
        n = len(self._window)
        if not n:
            return 0.0, 0.0
        return self._failures / n, self._slows / n
