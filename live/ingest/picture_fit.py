"""A broadcaster's picture fitted to the channel's top rung: scaled and letterboxed."""

from __future__ import annotations

import av
import numpy as np


def fit_picture(picture: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """``picture`` scaled into ``width`` x ``height`` yuv420p, letterboxed to keep its shape."""
    if (picture.width, picture.height) == (width, height) and picture.format.name == "yuv420p":
        return picture
    scale = min(width / picture.width, height / picture.height)
    fit_w = min(width, max(2, round(picture.width * scale) & ~1))
    fit_h = min(height, max(2, round(picture.height * scale) & ~1))
    scaled = picture.reformat(width=fit_w, height=fit_h, format="yuv420p")
    if (fit_w, fit_h) == (width, height):
        return scaled
    planes = scaled.to_ndarray()  # (fit_h * 3 / 2, fit_w): Y, then U and V stacked
    canvas = np.empty((height * 3 // 2, width), np.uint8)
    canvas[:height] = 16
    canvas[height:] = 128
    top, left = ((height - fit_h) // 2) & ~1, ((width - fit_w) // 2) & ~1
    canvas[top : top + fit_h, left : left + fit_w] = planes[:fit_h]
    chroma = canvas[height:].reshape(2, height // 2, width // 2)
    source_chroma = planes[fit_h:].reshape(2, fit_h // 2, fit_w // 2)
    chroma[:, top // 2 : (top + fit_h) // 2, left // 2 : (left + fit_w) // 2] = source_chroma
    canvas[height:] = chroma.reshape(height // 2, width)
    return av.VideoFrame.from_ndarray(canvas, format="yuv420p")
