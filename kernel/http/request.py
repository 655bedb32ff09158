"""What the data-plane server parses a request into, and the limits it holds requests to.

Apart from the server's protocol so that a handler (the edge's access, cache and response
steps) reads what a request is without the machinery that parses it.  A request keeps only
the headers named in :data:`WANTED`: any other is counted toward the head's size, then
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernel.http.hold import HOLD_HEADER


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 8192
    max_target_bytes: int = 4096
    max_body_bytes: int = 1 << 20
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_write_buffer: int = 32 << 20  # a viewer further behind than this is cut off
    max_pipelined: int = 32


class Request:
    """One parsed request.  Defaults live on the class: a request only stores what it has
    (most carry a method, a target and a Host, nothing else), so making one is cheap."""

    method = b""
    target = b""
    host: bytes | None = None
    range: bytes | None = None
    if_range: bytes | None = None  # a child node resuming a body names the copy it began
    origin: bytes | None = None
    authorization: bytes | None = None
    hold: bytes | None = None  # Livemesh-Hold: how long a child node waits for our head
    # CTA-5004 header mode: the player's CMCD, parsed by whoever wants it (kernel.cmcd)
    cmcd_object: bytes | None = None
    cmcd_request: bytes | None = None
    cmcd_session: bytes | None = None
    cmcd_status: bytes | None = None
    body: bytearray | None = None
    keep_alive = True
    http11 = True


# the headers a handler may read, by their common spellings; any other spelling of a name
# of one of these lengths is looked up again lower-cased
WANTED = {
    spelling: name
    for name in ("host", "range", "origin", "authorization")
    for spelling in (name.encode(), name.title().encode(), name.upper().encode())
}
WANTED.update({HOLD_HEADER.lower().encode(): "hold", HOLD_HEADER.encode(): "hold"})
WANTED.update({b"if-range": "if_range", b"If-Range": "if_range", b"IF-RANGE": "if_range"})
WANTED.update(
    {
        spelling: f"cmcd_{part}"
        for part in ("object", "request", "session", "status")
        for spelling in (f"cmcd-{part}".encode(), f"CMCD-{part.title()}".encode())
    }
)
WANTED_LENGTHS = frozenset(len(name) for name in WANTED)
