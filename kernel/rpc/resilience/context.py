"""What flows from an inbound call to the calls it makes: its deadline and priority.

The server side sets both (from ``context.time_remaining()`` and the
``livemesh-priority`` metadata) for the duration of a handler; the client side
reads them for every outbound call. Context variables follow asyncio tasks, so
the tasks a handler starts inherit them too.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from typing import Any

from kernel.rpc.resilience.policy import Priority

PRIORITY_KEY = "livemesh-priority"
# the timeout the caller gave the call, in µs, as it sent it: the server compares it with
# what is left on arrival at the handler to learn how long the call queued (gRPC keeps
# its own grpc-timeout header from the application)
TIMEOUT_KEY = "livemesh-timeout-us"
# W3C trace context (read here with the rest, in one pass; written by the tracing module)
TRACEPARENT_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"

# (deadline on the monotonic clock, priority) of the call being handled: one variable,
# so a handler pays one set and one reset for both
_inbound: contextvars.ContextVar[tuple[float | None, Priority | None]] = contextvars.ContextVar(
    "livemesh_inbound", default=(None, None)
)

Token = contextvars.Token[tuple[float | None, Priority | None]]


def deadline() -> float | None:
    """The inbound deadline on the monotonic clock, or None outside a handler."""
    return _inbound.get()[0]


def priority() -> Priority | None:
    return _inbound.get()[1]


def enter(remaining_s: float | None, prio: Priority | None = None) -> Token:
    """Start handling a call with ``remaining_s`` left (None: no deadline); undo with
    :func:`leave`. A deadline already in force is never extended, and a priority
    already in force is kept when ``prio`` is None."""
    current, current_prio = _inbound.get()
    at = None if remaining_s is None else time.monotonic() + remaining_s
    if current is not None and (at is None or current < at):
        at = current
    return _inbound.set((at, current_prio if prio is None else prio))


def leave(token: Token) -> None:
    _inbound.reset(token)


@contextlib.contextmanager
def inbound(remaining_s: float | None, prio: Priority | None = None) -> Iterator[None]:
    """Run the body as the handling of a call with ``remaining_s`` left (None: no deadline)."""
    token = enter(remaining_s, prio)
    try:
        yield
    finally:
        leave(token)


def outbound_timeout(default_s: float, margin_s: float, explicit_s: float | None = None) -> float:
    """The timeout of an outbound call: what the inbound call has left minus ``margin_s``,
    else ``default_s``; never more than an explicit ``timeout=``. May be ≤ 0 (too late)."""
    at = _inbound.get()[0]
    timeout = default_s if at is None else at - time.monotonic() - margin_s
    if explicit_s is not None:
        timeout = min(timeout, explicit_s)
    return timeout


class Inbound:
    """What the layer reads of an inbound call's metadata, in one pass for all of its
    server stages (``ServicerContext.invocation_metadata()`` builds a new tuple of
    new strings at every call)."""

    __slots__ = ("sent_priority", "sent_timeout_s", "traceparent", "tracestate")

    def __init__(self, metadata: Iterable[tuple[str, Any]] | None) -> None:
        self.sent_priority: Priority | None = None
        # the timeout the caller sent the call with, if it said (:func:`timeout_entry`)
        self.sent_timeout_s: float | None = None
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        for key, value in metadata or ():
            if key == PRIORITY_KEY:
                self.sent_priority = _PRIORITY_BY_VALUE.get(value)
            elif key == TIMEOUT_KEY:
                self.sent_timeout_s = _seconds_of_micros(value)
            elif key == TRACEPARENT_KEY and isinstance(value, str):
                self.traceparent = value
            elif key == TRACESTATE_KEY and isinstance(value, str):
                self.tracestate = value

    def priority(self, declared: Priority) -> Priority:
        """The call's priority: its method's, raised to the one the caller sent (a hop
        made for a CRITICAL call is CRITICAL too)."""
        sent = self.sent_priority
        return declared if sent is None or declared < sent else sent


def _seconds_of_micros(value: str) -> float | None:
    try:
        return int(value) / 1e6
    except ValueError:
        return None


def priority_entry(prio: Priority) -> tuple[str, str]:
    """The metadata entry that carries ``prio`` (made once per priority)."""
    return _PRIORITY_ENTRIES[prio]


_PRIORITY_ENTRIES = {prio: (PRIORITY_KEY, str(int(prio))) for prio in Priority}
_PRIORITY_BY_VALUE = {value: prio for prio, (_, value) in _PRIORITY_ENTRIES.items()}


def timeout_entry(timeout_s: float) -> tuple[str, str]:
    """The metadata entry that tells the server the timeout a call was sent with."""
    return TIMEOUT_KEY, str(int(timeout_s * 1e6))
