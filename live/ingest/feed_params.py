"""What a broadcaster's feed carries, and whether a backup feed agrees with the primary.

A broadcaster may push a backup feed beside its primary one (dual ingest: its second
encoder, or the same encoder's second output), which takes the channel over the
instant the primary goes stale.  That switch is only invisible when both feeds carry
the same picture: a backup at another resolution or frame rate would change the
letterbox or the motion at the switch, so it is refused, told why, as soon as its
first picture says what it carries.  Sound is not compared: the channel resamples
every feed to its own rate and layout, and a WHIP feed's Opus is always 48 kHz while
an RTMP feed's AAC rarely is, so a WHIP/RTMP pair would never agree.  Pure logic.
"""

from __future__ import annotations

from dataclasses import dataclass

RATE_TOLERANCE = 0.01  # declared frame rates this close (29.97 / 30000/1001) are the same


@dataclass(frozen=True)
class FeedParams:
    """A feed's picture: its size, and its frame rate where the protocol declares one
    (FLV's metadata does; a WebRTC track does not, so ``None``)."""

    width: int
    height: int
    frame_rate: float | None = None

    def __str__(self) -> str:
        rate = f"@{self.frame_rate:g}" if self.frame_rate is not None else ""
        return f"{self.width}x{self.height}{rate}"


def disagreement(primary: FeedParams, backup: FeedParams) -> str | None:
    """Why ``backup`` cannot stand in for ``primary``, or ``None`` when it can."""
    if (backup.width, backup.height) != (primary.width, primary.height):
        return (
            f"the backup feed is {backup.width}x{backup.height}, "
            f"the primary {primary.width}x{primary.height}"
        )
    ours, theirs = primary.frame_rate, backup.frame_rate
    if ours is not None and theirs is not None and abs(ours - theirs) > RATE_TOLERANCE:
        return f"the backup feed runs at {theirs:g} fps, the primary at {ours:g}"
    return None
