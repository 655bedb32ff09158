"""The pre-positioning API: ``POST /admin/preposition`` fills named objects ahead of viewers.

Behind a bearer secret (``--admin-key``); the body names the paths, at most
``MAX_PREPOSITION_PATHS``, filled ``PREPOSITION_CONCURRENCY`` at a time; the answer
says each one's status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from edge.access import CACHED_ROOTS
from edge.fill import Fill
from edge.metrics import Counters
from kernel.http.server import Connection, Request
from kernel.tokens import path_is_clean

PREPOSITION_PATH = "/admin/preposition"
MAX_PREPOSITION_PATHS = 1000
PREPOSITION_CONCURRENCY = 8


class Preposition:
    def __init__(
        self,
        admin_key: str | None,
        prefetch: Callable[[str], Awaitable[Fill]],
        counters: Counters,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.admin_key = admin_key  # None: the API is off
        self.prefetch = prefetch
        self.counters = counters
        self.spawn = spawn

    def handle(self, conn: Connection, req: Request) -> None:
        if req.method != b"POST":
            conn.simple(405, extra=b"Allow: POST\r\n")
            return
        secret = self.admin_key
        given = (req.authorization or b"").removeprefix(b"Bearer ").strip()
        if not secret or not hmac.compare_digest(given, secret.encode()):
            conn.error(403, "forbidden")
            return
        try:
            paths = parse_preposition(bytes(req.body or b""))
        except ValueError as exc:
            conn.error(400, str(exc))
            return
        self.spawn(self._run(conn, paths))

    async def _run(self, conn: Connection, paths: list[str]) -> None:
        gate = asyncio.Semaphore(PREPOSITION_CONCURRENCY)

        async def one(path: str) -> tuple[str, int]:
            async with gate:
                fill = await self.prefetch(path)
                return path, (502 if fill.error else fill.status)

        results = dict(await asyncio.gather(*(one(p) for p in paths)))
        self.counters.prepositioned += sum(1 for s in results.values() if s == 200)
        body = json.dumps({"results": results}).encode()
        conn.simple(200, body, content_type=b"application/json")


def parse_preposition(body: bytes) -> list[str]:
    """``{"paths": ["/vod/x/init.mp4", ...]}`` → the clean, cacheable paths, or ValueError."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ValueError("body is not JSON") from exc
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, list) or not paths:
        raise ValueError('expected {"paths": [...]}')
    if len(paths) > MAX_PREPOSITION_PATHS:
        raise ValueError(f"at most {MAX_PREPOSITION_PATHS} paths")
    for path in paths:
        if not isinstance(path, str) or not path_is_clean(path) or "%" in path:
            raise ValueError(f"bad path {str(path)[:100]!r}")
        if not path.startswith(CACHED_ROOTS):
            raise ValueError(f"not a cacheable path {path[:100]!r}")
    return list(dict.fromkeys(paths))
