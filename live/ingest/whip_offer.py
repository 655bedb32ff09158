"""The checks a WHIP offer passes before aiortc sees it, and the codecs it may carry.

aiortc misreads or answers wrongly some offers a client may send (no media, recvonly
media, missing ICE or DTLS attributes); each is refused here with its reason, which
the endpoint returns as the HTTP answer's text.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription

SUPPORTED = (
    "video: H.264 constrained baseline (profile-level-id 42e01f or 42001f, "
    "packetization-mode=1) or VP8; audio: Opus"
)


class SdpError(Exception):
    """The offer is not usable; ``status`` is the HTTP answer (400 or 406)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def check_offer(text: str) -> None:
    """Reject what aiortc would misread or answer wrongly, with the reason."""
    if not text.startswith("v=0"):
        raise SdpError(400, "malformed SDP: an offer starts with v=0")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the line broke
        raise SdpError(400, f"malformed SDP: {type(exc).__name__} {exc}") from exc
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    if not media:
        raise SdpError(400, "the offer has no audio or video")
    for m in media:
        if m.direction not in (None, "sendonly", "sendrecv"):
            raise SdpError(400, f"{m.kind}: WHIP ingest needs sendonly media, got {m.direction}")
        if not (m.ice and m.ice.usernameFragment and m.ice.password):
            raise SdpError(400, f"{m.kind}: ICE credentials (ice-ufrag, ice-pwd) are required")
        if not (m.dtls and m.dtls.fingerprints):
            raise SdpError(400, f"{m.kind}: a DTLS fingerprint is required")
        if not m.rtp.codecs:
            raise SdpError(400, f"{m.kind}: no codecs offered")
