"""The one shape of a short error answer: a plain-text reason that no cache keeps.

What is missing at the live edge now may exist a moment later, and a refusal
(bad token, unknown host) is about this request only, so every error answer
carries ``ERROR_CACHE_CONTROL``.  The origin (aiohttp) and the edge (its own
server) both build their error answers from here.
"""

from __future__ import annotations

ERROR_CACHE_CONTROL = "max-age=0, no-store"
ERROR_CONTENT_TYPE = "text/plain"


def error_text(reason: str) -> str:
    """The body of an error answer: its reason, one line."""
    return f"{reason}\n"
