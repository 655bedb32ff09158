"""Who may read our answers from a browser page on another origin (CORS), per server kind.

Players (dash.js, Shaka, hls.js) and the web app run on pages served from elsewhere,
so every answer names the allowed origin and the headers the page may read; a
preflight names the methods and request headers allowed.  Each server kind states
its policy here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ANY_ORIGIN = "*"


@dataclass(frozen=True)
class CorsPolicy:
    methods: str
    allow_headers: str
    expose_headers: str
    max_age_s: int | None = None
    allow_origin: str = ANY_ORIGIN

    def response_headers(self) -> dict[str, str]:
        """What every answer carries, errors too (a player must read why)."""
        return {
            "Access-Control-Allow-Origin": self.allow_origin,
            "Access-Control-Expose-Headers": self.expose_headers,
        }

    def preflight_headers(self) -> dict[str, str]:
        """What an ``OPTIONS`` preflight answer adds."""
        headers = {
            "Access-Control-Allow-Methods": self.methods,
            "Access-Control-Allow-Headers": self.allow_headers,
        }
        if self.max_age_s is not None:
            headers["Access-Control-Max-Age"] = str(self.max_age_s)
        return headers

    def all_headers(self) -> dict[str, str]:
        """Both sets, for servers that send the whole policy on every answer."""
        return {**self.response_headers(), **self.preflight_headers()}

    def for_origin(self, origin: str) -> CorsPolicy:
        """The same policy for one allowed browser origin instead of any."""
        return replace(self, allow_origin=origin)


def wire(headers: dict[str, str]) -> bytes:
    """Header lines as HTTP/1.1 wire bytes, for servers that write heads themselves."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()


# The origin: what dash.js reads across origins (clock sync, throughput estimates).
MEDIA = CorsPolicy(
    methods="GET, HEAD, OPTIONS",
    allow_headers="*",
    expose_headers="Date, Content-Length, Content-Type, Cache-Control, Age",
    max_age_s=86400,
)
# The cache nodes: a player may ask for a byte range, and reads whether it was a hit and
# the nodes' CMSD (CTA-5006, kernel.cmsd).
EDGE = CorsPolicy(
    methods="GET, HEAD, OPTIONS",
    allow_headers="Range",
    expose_headers="Age, Date, X-Cache, CMSD-Static, CMSD-Dynamic",
    max_age_s=86400,
)
# WHIP ingest (RFC 9725): a browser broadcaster creates, patches and ends its session.
WHIP = CorsPolicy(
    methods="POST, PATCH, DELETE, OPTIONS",
    allow_headers="Authorization, Content-Type, If-Match",
    expose_headers="Location, ETag, Accept-Patch, Link",
)
# The gateway: the web app's JSON API (its allowed origin is configured).
GATEWAY = CorsPolicy(
    methods="GET, POST, PATCH, OPTIONS",
    allow_headers="Authorization, Content-Type, X-Request-Id",
    expose_headers="X-Request-Id, Retry-After",
    max_age_s=600,
)
