"""The slate: a still picture shown while no broadcaster is on air.

It names the channel and says whether the show is "starting soon" (no
broadcaster yet) or "back soon" (one was on air and left), so a player that is
watching sees why nothing moves, and never stalls.
"""

from __future__ import annotations

from enum import Enum

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SLATE_BACKGROUND = (24, 28, 40)  # dark blue-grey, RGB
SLATE_TEXT = (235, 235, 235)


class SlateKind(Enum):
    STARTING = "starting soon"
    BACK = "back soon"


def render_slate(width: int, height: int, channel: str, kind: SlateKind) -> av.VideoFrame:
    """A yuv420p picture with the channel name and the slate's message."""
    image = Image.new("RGB", (width, height), SLATE_BACKGROUND)
    draw = ImageDraw.Draw(image)
    big = ImageFont.load_default(size=max(12, height // 8))
    small = ImageFont.load_default(size=max(10, height // 14))
    for text, font, y in ((channel, big, height * 3 // 10), (kind.value, small, height * 6 // 10)):
        left, top, right, _bottom = draw.textbbox((0, 0), text, font=font)
        draw.text(((width - (right - left)) // 2, y - top), text, font=font, fill=SLATE_TEXT)
    frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
    return frame.reformat(format="yuv420p")


class Slates:
    """The channel's slates, rendered once each at the ladder's top size."""

    def __init__(self, width: int, height: int, channel: str) -> None:
        self._frames = {kind: render_slate(width, height, channel, kind) for kind in SlateKind}

    def frame(self, kind: SlateKind) -> av.VideoFrame:
        return self._frames[kind]
