"""The ``Livemesh-Hold`` header: how tiers talk about a request held at the live edge.

A request for the next segment is held until its first chunk exists (DESIGN.md §5).
On a request, the header tells the parent how long the asking node waits (seconds,
e.g. ``4.500``), so the tier nearer the origin gives up first.  On a 503 answer,
``expired`` says the hold ran out: the encoder is late, not the parent broken, so a
child node passes the 503 on instead of failing over.  This header is the only
signal of it; the body's reason is for people.
"""

from __future__ import annotations

HOLD_HEADER = "Livemesh-Hold"
HOLD_EXPIRED = "expired"
