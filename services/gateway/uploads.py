"""``POST /v1/vodUploads``: an operator's VOD source (the request body, any media type),
streamed into the object store, answered with its object name for ``POST
/v1/vodPublications`` (``CatalogService.PublishVodTitle``) to publish.

This route calls no RPC before it takes the bytes, so the gateway checks the operator
credential itself, with the credential key's public half every server verifies with
(:mod:`kernel.rpc.credentials`), before it reads a byte: no credential or a forged one
is 401, a valid viewer's token (identity's keys) 403, as the services answer. The body is
written to a temporary file as it arrives, 1 MiB at a time, and counted: past the size
limit (said up front by ``Content-Length``, or found on the way) it is 413 and the file is
gone; so an upload is never whole in memory, whatever its size. The store then reads the
file as it sends it (:meth:`kernel.objectstore.ObjectStore.put_file`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from aiohttp import web

from kernel.objectstore import ObjectStore
from kernel.rpc.auth import OPERATOR, Principal, TokenVerifier
from kernel.rpc.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.gateway.body import BodyRejected

CHUNK_BYTES = 1 << 20


class Uploads:
    """Sources up to ``max_bytes`` into ``store`` under ``uploads/{random}/source``, from
    callers ``operators`` verifies (None: no credential key configured, none accepted);
    ``viewers`` tells a viewer's token (403) from a forgery (401)."""

    def __init__(
        self,
        store: ObjectStore,
        max_bytes: int,
        operators: TokenVerifier | None,
        viewers: TokenVerifier,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.operators = operators
        self.viewers = viewers

    async def upload(self, request: web.Request, token: str) -> web.Response:
        """Check the caller, take the body into the store: 200 with the object's name."""
        await self.operator(token)
        if request.content_length is not None and request.content_length > self.max_bytes:
            raise self._too_large()
        with tempfile.TemporaryDirectory(prefix="vod-upload-") as tmp:
            path = Path(tmp) / "source"
            size = await self._receive(request, path)
            if size == 0:
                raise InvalidArgument("body", "the upload is empty: send the video file")
            name = f"uploads/{os.urandom(8).hex()}/source"
            await self.store.put_file(name, path)
        return web.json_response({"sourceObject": name, "sizeBytes": str(size)})

    async def operator(self, token: str) -> Principal:
        """The operator ``token`` is; 401 when it verifies as nothing, 403 for another role."""
        if self.operators is None:
            raise Unauthenticated("this gateway verifies no operator credential (none configured)")
        try:
            principal = await self.operators.verify(token)
        except Unauthenticated as forged:
            try:
                principal = await self.viewers.verify(token)
            except Unauthenticated:
                raise forged from None
        if principal.role != OPERATOR:
            raise PermissionDenied(f"uploads take an operator credential, not a {principal.role}")
        return principal

    async def _receive(self, request: web.Request, path: Path) -> int:
        """Write the body to ``path`` as it arrives; its size, or 413 past the limit."""
        size = 0
        with path.open("wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large()
                await asyncio.to_thread(out.write, chunk)
        return size

    def _too_large(self) -> BodyRejected:
        return BodyRejected(413, f"the upload is over the limit of {self.max_bytes} bytes")
