"""``Range`` request headers (RFC 9110 §14): one byte range of a complete object."""

from __future__ import annotations

MAX_DIGITS = 18


class Unsatisfiable(Exception):
    """A well-formed range that lies outside the object (416)."""


def parse(header: bytes, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` to send, or None to send the whole object.

    Malformed or multi-range headers are ignored (None), as RFC 9110 allows; a range
    that starts past the end raises :class:`Unsatisfiable`.
    """
    unit, sep, spec = header.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition(b"-")
    if not dash or len(first_s) > MAX_DIGITS or len(last_s) > MAX_DIGITS:
        return None
    if (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:  # suffix: the last N bytes
        if not last_s:
            return None
        n = int(last_s)
        if n == 0:
            raise Unsatisfiable()
        return (max(size - n, 0), size - 1) if size else None
    first = int(first_s)
    last = int(last_s) if last_s else None
    if last is not None and last < first:
        return None
    if first >= size:
        raise Unsatisfiable()
    if last is None:
        last = size - 1
    return first, min(last, size - 1)


def closed(header: bytes) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` of a ``bytes=first-last`` header, which can be answered
    before the object is whole (an LL-HLS part of a segment still filling); else None."""
    unit, sep, spec = header.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes":
        return None
    first_s, dash, last_s = spec.strip().partition(b"-")
    if not (dash and first_s.isdigit() and last_s.isdigit()):
        return None
    if len(first_s) > MAX_DIGITS or len(last_s) > MAX_DIGITS:
        return None
    first, last = int(first_s), int(last_s)
    return (first, last) if first <= last else None


def slices(pieces: list[bytes], first: int, last: int) -> list[memoryview]:
    """Views of ``pieces`` covering bytes ``first..last`` (no copy)."""
    out: list[memoryview] = []
    pos = 0
    for piece in pieces:
        end = pos + len(piece)
        if end > first and pos <= last:
            out.append(memoryview(piece)[max(first - pos, 0) : min(last + 1 - pos, len(piece))])
        pos = end
        if pos > last:
            break
    return out


def honoured(if_range: bytes | None, validator: str | None) -> bool:
    """Whether a ``Range`` may be answered under ``If-Range`` (RFC 9110 §13.1.5): always
    without one; with one, only when it is the object's strong ETag.  Any other (a date,
    another copy's tag) asks for the whole object, as it is now."""
    return if_range is None or (validator is not None and if_range.decode("latin-1") == validator)
