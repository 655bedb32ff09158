"""Who may ask the node for what: Host, path, method and token, checked before the cache.

The cache key is the path without the token and, but for a playlist, without the query:
an LL-HLS playlist asked with ``_HLS_msn``/``_HLS_part``/``_HLS_skip`` is a different
answer per directive (the origin holds it until that part exists), so those directives,
and nothing else of the query (CMCD is telemetry), are part of its key, in one order.

A target that passed is remembered with its verdict (cache key, and until when its
token holds), so a repeated target skips the path checks and the token's HMAC; the
node reads :attr:`Access.routes` itself on its hit path.
"""

from __future__ import annotations

from edge.config import NodeConfig
from edge.metrics import Counters
from kernel.http.cors import EDGE, wire
from kernel.http.server import Connection, Request
from kernel.tokens import TokenError, TokenSigner, UnknownKey, path_is_clean, split_token

CACHED_ROOTS = ("/live/", "/vod/")
ROUTE_CACHE_ENTRIES = 4096
ROUTE_TARGET_MAX = 1024
PLAYLIST_SUFFIX = ".m3u8"
# The LL-HLS delivery directives, in the order RFC 8216bis §6.2.5 has clients send them.
HLS_DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")
DIRECTIVE_MAX = 16  # longer values are not numbers or YES: refused, never keyed
PREFLIGHT = wire(EDGE.preflight_headers())

Route = tuple[str, float | None]  # the cache key; until when (s since the epoch) it holds


class Access:
    def __init__(self, config: NodeConfig, counters: Counters) -> None:
        keys = config.token_keys
        if config.tokens_required and not keys:
            raise ValueError(f"{config.name}: tokens required but no token keys given")
        # None: a node serving without tokens and without keys (a shield), which refuses
        # any token it is given as of an unknown key
        self.signer = TokenSigner.from_spec(keys) if keys else None
        self.tokens_required = config.tokens_required
        self.allowed_hosts = {h.encode().lower() for h in config.allowed_hosts}
        self.counters = counters
        self.routes: dict[bytes, Route] = {}

    def host_refused(self, conn: Connection, req: Request) -> bool:
        """Whether the Host is not one of ours (answered 421 here)."""
        if (req.host or b"").split(b":")[0].lower() in self.allowed_hosts:
            return False
        self.counters.bad_requests += 1
        conn.error(421, "unknown host")
        return True

    def check(self, conn: Connection, req: Request) -> tuple[str, bool] | None:
        """Every check of a target not remembered: ``(path, cached)`` when it may be served
        (``cached``: from the cache, else a local endpoint); None when answered here."""
        target, method = req.target, req.method
        query = target.find(b"?")
        raw_path = target if query < 0 else target[:query]
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            self._bad_path(conn)
            return None
        if method == b"OPTIONS":
            conn.simple(204, extra=PREFLIGHT)
            return None
        token, path = split_token(path)
        if "%" in path or not path_is_clean(path):
            self._bad_path(conn)
            return None
        if not path.startswith(CACHED_ROOTS):
            return path, False
        key = path
        if query >= 0 and path.endswith(PLAYLIST_SUFFIX):
            directives = playlist_directives(target[query + 1 :])
            if directives is None:
                self._bad_path(conn)
                return None
            key += directives
        if method != b"GET" and method != b"HEAD":
            conn.simple(405, extra=b"Allow: GET, HEAD, OPTIONS\r\n")
            return None
        until: float | None = None
        if token is not None or self.tokens_required:
            try:
                if self.signer is None:
                    raise UnknownKey("no token keys")
                claims = self.signer.verify(token or "", path)
            except TokenError as exc:
                self.counters.token_rejections += 1
                conn.error(403, f"token: {exc.reason}")
                return None
            until = float(claims.expires_s)  # verify() refuses it from this instant on
        self._remember(target, key, until)
        return key, True

    def _bad_path(self, conn: Connection) -> None:  # also a bad query
        self.counters.bad_requests += 1
        conn.error(400, "bad path")

    def _remember(self, target: bytes, key: str, until: float | None) -> None:
        """Remember an accepted target's verdict; the oldest goes when the table is full."""
        if len(target) > ROUTE_TARGET_MAX:
            return
        routes = self.routes
        if len(routes) >= ROUTE_CACHE_ENTRIES:
            del routes[next(iter(routes))]
        routes[target] = (key, until)


def playlist_directives(query: bytes) -> str | None:
    """The LL-HLS directives of a playlist query as the key's suffix (``?_HLS_msn=7&...``,
    ``""`` when there are none); None when one is malformed or repeated."""
    found: dict[str, str] = {}
    for field in query.split(b"&"):
        name, _, value = field.partition(b"=")
        text = name.decode("ascii", "replace")
        if text not in HLS_DIRECTIVES:
            continue
        if text in found or not value.isalnum() or len(value) > DIRECTIVE_MAX:
            return None
        found[text] = value.decode("ascii")
    pairs = [f"{name}={found[name]}" for name in HLS_DIRECTIVES if name in found]
    return "?" + "&".join(pairs) if pairs else ""
