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


def slices(chunks: list[bytes], first: int, last: int) -> list[memoryview]:
    """Views of ``chunks`` covering bytes ``first..last`` (no copy)."""
    out: list[memoryview] = []
    pos = 0
    for chunk in chunks:
        end = pos + len(chunk)
        if end > first and pos <= last:
            out.append(memoryview(chunk)[max(first - pos, 0) : min(last + 1 - pos, len(chunk))])
        pos = end
        if pos > last:
            break
    return out
