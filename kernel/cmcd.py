"""Common Media Client Data (CTA-5004) as a player sends it: a pure, bounded parser.

A player reports its state with every request, either as one ``CMCD=`` query parameter
(URL-encoded, ``key=value`` pairs joined by commas) or in four headers (``CMCD-Object``,
``CMCD-Request``, ``CMCD-Session``, ``CMCD-Status``) in the same syntax. A string value is
quoted, a token is bare, a boolean true is the bare key (``bs``), false is ``key=false``.

The input is hostile: only the keys below are kept, each checked against its CTA-5004
type and bound; a malformed pair is counted in :class:`CmcdStats` and dropped, the rest of
the payload kept. Parsing never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

Value = int | str | bool
Cmcd = dict[str, Value]

PARAM = b"CMCD="
MAX_PAYLOAD = 1024  # bytes of one payload (query value or one header); longer: dropped
MAX_STRING = 64  # CTA-5004 bounds sid and cid at 64 characters; nor alike here
MAX_INTEGER = 10**9  # kbps, ms: a larger value is no player's truth
# A player repeats most pairs request after request (its sid, br, ot; bl in 100 ms steps),
# so each distinct pair is checked once and remembered; the table is emptied when full.
MEMO_PAIRS = 4096
_SYNTAX = [(b"%" + code, char) for code, char in ((b"2C", b","), (b"3D", b"="), (b"22", b'"'))]
_SYNTAX += [(escape.lower(), char) for escape, char in _SYNTAX]
_MEMO: dict[str, tuple[str, Value] | Literal[False]] = {}

# key -> its CTA-5004 type: "i" integer, "s" string, "t" token, "b" boolean
TYPES = {
    "br": "i",  # encoded bitrate of the object, kbps
    "d": "i",  # object duration, ms
    "ot": "t",  # object type
    "bl": "i",  # buffer length, ms
    "dl": "i",  # deadline, ms
    "mtp": "i",  # measured throughput, kbps
    "nor": "s",  # next object request: a relative URL, itself URL-encoded (kept so)
    "su": "b",  # startup: the object is needed urgently (start, seek, recovery)
    "cid": "s",  # content id
    "sf": "t",  # streaming format
    "sid": "s",  # session id
    "st": "t",  # stream type
    "v": "i",  # CMCD version
    "bs": "b",  # buffer starvation since the last request
    "rtp": "i",  # requested maximum throughput, kbps
}
TOKENS = {
    "ot": frozenset({"m", "a", "v", "av", "i", "c", "tt", "k", "o"}),
    "sf": frozenset({"d", "h", "s", "o"}),
    "st": frozenset({"v", "l"}),
}


@dataclass
class CmcdStats:
    """What the parser saw: payloads parsed, pairs dropped as garbage, payloads too long."""

    payloads: int = 0
    dropped: int = 0
    oversized: int = 0


def split_query(target: bytes) -> tuple[bytes, bytes | None]:
    """The request target without its ``CMCD`` parameter, and that parameter's raw value
    (None when there is none); the other parameters keep their order."""
    query = target.find(b"?")
    if query < 0 or PARAM not in target:
        return target, None
    kept: list[bytes] = []
    found: bytes | None = None
    for field in target[query + 1 :].split(b"&"):
        if field.startswith(PARAM) and found is None:
            found = field[len(PARAM) :]
        else:
            kept.append(field)
    base = target[:query]
    return (base + b"?" + b"&".join(kept) if kept else base), found


def parse_query(raw: bytes, stats: CmcdStats, into: Cmcd | None = None) -> Cmcd:
    """The pairs of a ``CMCD=`` query value (still URL-encoded)."""
    if len(raw) > MAX_PAYLOAD:
        stats.oversized += 1
        return into if into is not None else {}
    return parse_pairs(_unquote(raw), stats, into)


def _unquote(raw: bytes) -> str:
    """URL-decoded: the three escapes of CMCD's syntax by ``bytes.replace`` (C speed), and
    the general decoder only when other escapes remain (a ``nor``, an odd ``sid``)."""
    fast = raw
    for escape, char in _SYNTAX:
        if escape in fast:
            fast = fast.replace(escape, char)
    if b"%" in fast:
        return unquote(raw.decode("latin-1"))
    return fast.decode("latin-1")


def parse_headers(headers: list[bytes | None], stats: CmcdStats) -> Cmcd:
    """The pairs of the four CMCD headers (any of them may be absent)."""
    found: Cmcd = {}
    for value in headers:
        if value is None:
            continue
        if len(value) > MAX_PAYLOAD:
            stats.oversized += 1
            continue
        parse_pairs(value.decode("latin-1"), stats, found)
    return found


def parse_pairs(text: str, stats: CmcdStats, into: Cmcd | None = None) -> Cmcd:
    """The valid pairs of one payload, added to ``into``; every other pair is counted."""
    found: Cmcd = {} if into is None else into
    stats.payloads += 1
    memo = _MEMO
    for pair in _pairs(text):
        checked = memo.get(pair)
        if checked is None:
            checked = _pair(pair)
            if len(memo) >= MEMO_PAIRS:
                memo.clear()
            memo[pair] = checked
        if checked is False:
            stats.dropped += 1
        else:
            found[checked[0]] = checked[1]
    return found


def _pair(pair: str) -> tuple[str, Value] | Literal[False]:
    """One ``key=value`` checked: the key and its typed value, or False."""
    key, eq, raw = pair.partition("=")
    key = key.strip()
    kind = TYPES.get(key)
    value = _value(kind, key, raw.strip(), bool(eq)) if kind is not None else None
    return False if value is None else (key, value)


def _pairs(text: str) -> list[str]:
    """Split on commas outside quoted strings (a string may hold a comma): the pieces of
    a plain split, joined again while a piece holds an open quote."""
    pieces = text.split(",")
    if '"' not in text:
        return [p for p in pieces if p]
    pairs: list[str] = []
    pending: str | None = None
    for piece in pieces:
        pending = piece if pending is None else pending + "," + piece
        if _quotes(pending) % 2 == 0:
            pairs.append(pending)
            pending = None
    if pending is not None:
        pairs.append(pending)  # an unclosed string: refused when checked
    return [p for p in pairs if p]


def _quotes(text: str) -> int:
    """The quotes that open or close a string (an escaped ``\\"`` does neither)."""
    return text.count('"') - text.count('\\"') + text.count('\\\\"')


def _value(kind: str, key: str, raw: str, has_value: bool) -> Value | None:
    """A value checked against its key's type; None when it does not meet it."""
    if kind == "b":
        if not has_value:
            return True
        return False if raw == "false" else None
    if not has_value:
        return None
    if kind == "i":
        if not raw.isdigit() or len(raw) > 10:
            return None
        number = int(raw)
        return number if number <= MAX_INTEGER else None
    if kind == "t":
        return raw if raw in TOKENS[key] else None
    return _string(raw)


def _string(raw: str) -> str | None:
    """A quoted string's content (``\\"`` and ``\\\\`` unescaped), printable and bounded."""
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return None
    text = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if len(text) > MAX_STRING or not text.isprintable():
        return None
    return text
