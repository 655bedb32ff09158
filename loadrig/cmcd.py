"""The CMCD a virtual viewer sends with each segment request, in query mode as dash.js
does (CTA-5004: keys in alphabetical order, strings quoted, true booleans bare, the
whole payload URL-encoded as one ``CMCD`` parameter), so the edges' QoE path sees the
load rig's viewers as it sees browsers."""

from __future__ import annotations

from urllib.parse import quote

OBJECT_TYPES = {"video": "v", "audio": "a"}


def cmcd_query(
    *,
    sid: str,
    kind: str,
    bitrate_bps: int,
    buffer_s: float,
    throughput_bps: float,
    startup: bool,
    starved: bool,
) -> str:
    """The ``CMCD=...`` query parameter of one media request."""
    pairs = [
        f"bl={round(buffer_s * 10) * 100}",  # ms, in 100 ms steps as the spec asks
        f"br={bitrate_bps // 1000}",
        f"mtp={round(throughput_bps / 100_000) * 100}",  # kbps, in 100 kbps steps
        f"ot={OBJECT_TYPES.get(kind, 'o')}",
        "sf=d",
        f'sid="{sid}"',
        "st=l",
        "v=1",
    ]
    if starved:
        pairs.append("bs")
    if startup:
        pairs.append("su")
    return "CMCD=" + quote(",".join(sorted(pairs)), safe="")
