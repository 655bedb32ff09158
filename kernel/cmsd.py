"""CTA-5006 Common Media Server Data: the header values a cache node adds to a response.

``CMSD-Static`` (an RFC 8941 Dictionary) says what does not change as the object is
passed on: ``n`` the node, ``ot`` the object type, ``st`` the stream type and, for a
request this node held until its object existed, ``ht`` the time held (ms).
``CMSD-Dynamic`` (an RFC 8941 List, each hop prepending its member: the node's id as a
String, its keys as parameters) says how this hop is doing: ``du`` under duress,
``etp`` its estimate of the throughput a connection gets (kbps), ``rd`` the delay of
this response's first byte (ms). Keys are written in alphabetical order, as CTA-5004
and -5006 recommend; a true boolean is the bare key.

Pure formatting: the edge renders these once per object (static) and once per second
(dynamic) so that a cache hit costs no formatting (:mod:`edge.responses`).
"""

from __future__ import annotations

import re

STATIC = "CMSD-Static"
DYNAMIC = "CMSD-Dynamic"
EXPOSED = f"{STATIC}, {DYNAMIC}"  # what a browser player may read (CORS)

_PRINTABLE = re.compile(r"[\x20-\x7e]*")  # an RFC 8941 String's characters


def sf_string(value: str) -> str:
    """``value`` as an RFC 8941 String (quoted, ``\\`` and ``"`` escaped)."""
    if not _PRINTABLE.fullmatch(value):
        raise ValueError(f"not printable ASCII: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def object_type(path: str) -> str:
    """CTA-5006 ``ot`` of a livemesh path: m manifest, i init, a audio, v video, o other."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith((".mpd", ".m3u8")):
        return "m"
    if name == "init.mp4":
        return "i"
    if name.endswith((".m4s", ".mp4")):
        rung = path.rsplit("/", 2)[-2] if path.count("/") >= 2 else ""
        return "a" if rung.startswith("a") else "v"
    return "o"


def stream_type(path: str) -> str | None:
    """``st``: l(ive) under ``/live/``, v(od) under ``/vod/``; None elsewhere."""
    if path.startswith("/live/"):
        return "l"
    if path.startswith("/vod/"):
        return "v"
    return None


def static_value(node: str, path: str) -> str:
    """The ``CMSD-Static`` value of ``path`` as node ``node`` serves it."""
    pairs = [f"n={sf_string(node)}", f"ot={object_type(path)}"]
    st = stream_type(path)
    if st is not None:
        pairs.append(f"st={st}")
    return ",".join(pairs)


def held_value(held_ms: int) -> str:
    """The ``CMSD-Static`` member of a response held ``held_ms`` (a second field line:
    RFC 8941 Dictionaries on several lines are one)."""
    return f"ht={max(0, held_ms)}"


def dynamic_value(node: str, *, duress: bool, etp_kbps: int | None, rd_ms: int | None) -> str:
    """This node's ``CMSD-Dynamic`` member."""
    params = []
    if duress:
        params.append(";du")
    if etp_kbps is not None:
        params.append(f";etp={max(0, etp_kbps)}")
    if rd_ms is not None:
        params.append(f";rd={max(0, rd_ms)}")
    return sf_string(node) + "".join(params)
