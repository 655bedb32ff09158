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
from collections.abc import Iterator

from services.resilience.policy import Priority

PRIORITY_KEY = "livemesh-priority"
# the timeout the caller gave the call, in µs, as it sent it: the server compares it with
# what is left on arrival at the handler to learn how long the call queued (gRPC keeps
# its own grpc-timeout header from the application)
TIMEOUT_KEY = "livemesh-timeout-us"

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "livemesh_deadline", default=None
)
_priority: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "livemesh_priority", default=None
)


def deadline() -> float | None:
    """The inbound deadline on the monotonic clock, or None outside a handler."""
    return _deadline.get()


def priority() -> Priority | None:
    return _priority.get()


@contextlib.contextmanager
def inbound(remaining_s: float | None, prio: Priority | None = None) -> Iterator[None]:
    """Run the body as the handling of a call with ``remaining_s`` left (None: no deadline)."""
    at = None if remaining_s is None else time.monotonic() + remaining_s
    current = _deadline.get()
    if current is not None and (at is None or current < at):
        at = current  # never extend a deadline already in force
    d_token = _deadline.set(at)
    p_token = _priority.set(prio if prio is not None else _priority.get())
    try:
        yield
    finally:
        _deadline.reset(d_token)
        _priority.reset(p_token)


def outbound_timeout(default_s: float, margin_s: float, explicit_s: float | None = None) -> float:
    """The timeout of an outbound call: what the inbound call has left minus ``margin_s``,
    else ``default_s``; never more than an explicit ``timeout=``. May be ≤ 0 (too late)."""
    at = _deadline.get()
    timeout = default_s if at is None else at - time.monotonic() - margin_s
    if explicit_s is not None:
        timeout = min(timeout, explicit_s)
    return timeout


def priority_from(metadata: object) -> Priority | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == PRIORITY_KEY:
            try:
                return Priority(int(value))
            except ValueError:
                return None
    return None


def timeout_entry(timeout_s: float) -> tuple[str, str]:
    """The metadata entry that tells the server the timeout a call was sent with."""
    return TIMEOUT_KEY, str(int(timeout_s * 1e6))


def sent_timeout_from(metadata: object) -> float | None:
    """The timeout (s) the caller sent with the call, if it said (:func:`timeout_entry`)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == TIMEOUT_KEY:
            try:
                return int(value) / 1e6
            except ValueError:
                return None
    return None
