"""A session's target live latency written into its MPD (issue 16, the live-delay decision):
``ServiceDescription/Latency@target`` set to the session's value (playback's
``GetSteering`` says it, from the viewer's experiment cell), its ``min`` and ``max``
widened to include it. Players that honour the ServiceDescription (dash.js, Shaka) then
hold that latency."""

from __future__ import annotations

from lxml import etree

from services.gateway.steering import MPD_NS, PARSER


def with_target_latency(mpd: bytes, target_ms: int) -> bytes:
    """``mpd`` with every ServiceDescription's Latency aiming at ``target_ms``; as given
    when ``target_ms`` is 0 (the channel's own) or the MPD has no Latency element."""
    if target_ms <= 0:
        return mpd
    root = etree.fromstring(mpd, PARSER)
    latencies = root.findall(f"{{{MPD_NS}}}ServiceDescription/{{{MPD_NS}}}Latency")
    if not latencies:
        return mpd
    for latency in latencies:
        latency.set("target", str(target_ms))
        if int(latency.get("min", target_ms)) > target_ms:
            latency.set("min", str(target_ms))
        if int(latency.get("max", target_ms)) < target_ms:
            latency.set("max", str(target_ms))
    result: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return result
