"""The object store: immutable named blobs, on a local directory or on S3 (DESIGN.md §1).

VOD titles (and later, live events kept as titles) are written once and served for
years through caches that keep them as immutable, so the store enforces what the
URLs promise: a name never holds two different bodies.  A second put of the same
bytes is a no-op (an interrupted upload can be retried); a different body is refused
with :class:`ObjectExists`.  Deleting exists only to take back an unpublished upload.

Names are relative, ``/``-separated paths of plain components (no ``..``, no empty
or hidden parts), checked here once so neither backend can be walked out of.

Two backends behind one async interface: :class:`LocalStore` (the embedded default)
and :class:`S3Store` (boto3, the maintained AWS client, whose blocking calls run in
a worker thread; boto3 rather than aiobotocore because it is the client moto and
every S3-compatible server test against).
"""

from __future__ import annotations

import asyncio
import filecmp
import functools
import hashlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

# the embedded default: a directory beside the checkout, where ``livemesh vod add`` writes
# and the origin reads unless told otherwise
DEFAULT_STORE = "var/objects"
NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,127}$")
MAX_NAME = 1024


class ObjectStoreError(Exception):
    """A store operation that cannot be done as asked."""


class InvalidName(ObjectStoreError, ValueError):
    """A name that could escape the store or is not one of ours."""


class ObjectExists(ObjectStoreError):
    """A put of a different body under a name that already holds one."""


class ObjectNotFound(ObjectStoreError, KeyError):
    """No object under that name."""


def check_name(name: str) -> str:
    """``name`` itself if it is a safe relative object name, else :class:`InvalidName`."""
    parts = name.split("/")
    if len(name) > MAX_NAME or not all(NAME_PART.match(part) for part in parts):
        raise InvalidName(f"invalid object name {name!r}")
    return name


class ObjectStore(ABC):
    """Immutable objects under names; every method is safe to call from the event loop."""

    @abstractmethod
    async def put(self, name: str, body: bytes) -> None:
        """Store ``body`` under ``name``; :class:`ObjectExists` if it holds other bytes."""

    @abstractmethod
    async def put_file(self, name: str, path: Path) -> None:
        """Store the file at ``path`` under ``name``, read as it is sent (never whole in
        memory: an uploaded source may be gigabytes); :class:`ObjectExists` as :meth:`put`."""

    @abstractmethod
    async def get(self, name: str, first: int = 0, last: int | None = None) -> bytes:
        """Bytes ``first..last`` (inclusive; ``None``: to the end) of the object."""

    @abstractmethod
    async def size(self, name: str) -> int | None:
        """The object's length in bytes, or None when there is no such object."""

    @abstractmethod
    async def names(self, prefix: str) -> list[str]:
        """Names under the directory ``prefix`` (a name without a trailing ``/``), sorted."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove an object (taking back an unpublished upload); absent names are fine."""

    async def close(self) -> None:  # noqa: B027 (a store with nothing to release inherits this)
        """Release connections; the store is unusable afterwards."""


class LocalStore(ObjectStore):
    """Objects as files under ``root``; a put appears whole or not at all."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    async def put(self, name: str, body: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(name), body)

    def _put(self, path: Path, body: bytes) -> None:
        self._commit(path, lambda out: out.write(body), lambda: path.read_bytes() == body)

    async def put_file(self, name: str, path: Path) -> None:
        target = self._path(name)

        def copy(out: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, out)

        same = functools.partial(filecmp.cmp, target, path, shallow=False)
        await asyncio.to_thread(self._commit, target, copy, same)

    @staticmethod
    def _commit(path: Path, write: Callable[[BinaryIO], object], same: Callable[[], bool]) -> None:
        """``write`` a temporary file beside ``path``, then link it there: the first writer
        wins, a second one of the same bytes (``same``) is a no-op, of others refused."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        try:
            with os.fdopen(fd, "wb") as file:
                write(file)
            try:  # link, unlike rename, refuses to replace: the first writer wins
                os.link(tmp, path)
            except FileExistsError:
                if not same():
                    raise ObjectExists(f"{path.name} already holds other bytes") from None
        finally:
            os.unlink(tmp)

    async def get(self, name: str, first: int = 0, last: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, self._path(name), first, last)

    @staticmethod
    def _get(path: Path, first: int, last: int | None) -> bytes:
        try:
            with path.open("rb") as file:
                file.seek(first)
                return file.read(-1 if last is None else last - first + 1)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(path.name) from None

    async def size(self, name: str) -> int | None:
        path = self._path(name)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        return stat.st_size if path.is_file() else None

    async def names(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        files = await asyncio.to_thread(lambda: [p for p in base.rglob("*") if p.is_file()])
        return sorted(
            str(p.relative_to(self.root)) for p in files if not p.name.startswith(".put-")
        )

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._path(name).unlink, missing_ok=True)


class S3Store(ObjectStore):
    """Objects in an S3 bucket under an optional key prefix.

    The put is conditional (``If-None-Match: *``), so two writers racing on one name
    cannot both win; when the condition fails, equal bytes make it a no-op.
    """

    def __init__(
        self, bucket: str, prefix: str = "", client: Any = None, **client_args: Any
    ) -> None:
        import boto3  # imported here: the local store must not need AWS libraries loaded

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = client or boto3.client("s3", **client_args)

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    async def put(self, name: str, body: bytes) -> None:
        await asyncio.to_thread(self._put, self._key(name), body)

    def _put(self, key: str, body: bytes) -> None:
        self._conditional_put(key, body, hashlib.sha256(body).digest())

    async def put_file(self, name: str, path: Path) -> None:
        key = self._key(name)

        def put() -> None:
            with path.open("rb") as body:  # botocore streams a file body
                self._conditional_put(key, body, functools.partial(_file_digest, path))

        await asyncio.to_thread(put)

    def _conditional_put(
        self, key: str, body: bytes | BinaryIO, digest: bytes | Callable[[], bytes]
    ) -> None:
        """Put unless the key exists; then equal bytes (by ``digest``) are a no-op."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as error:
            if _status(error) not in (409, 412):
                raise
            held = hashlib.sha256()
            for chunk in self.client.get_object(Bucket=self.bucket, Key=key)["Body"].iter_chunks():
                held.update(chunk)
            wanted = digest if isinstance(digest, bytes) else digest()
            if held.digest() != wanted:
                raise ObjectExists(f"{key} already holds other bytes") from None

    async def get(self, name: str, first: int = 0, last: int | None = None) -> bytes:
        key = self._key(name)
        return await asyncio.to_thread(self._get, key, first, last)

    def _get(self, key: str, first: int, last: int | None) -> bytes:
        from botocore.exceptions import ClientError

        args: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if first or last is not None:
            args["Range"] = f"bytes={first}-{'' if last is None else last}"
        try:
            data: bytes = self.client.get_object(**args)["Body"].read()
        except ClientError as error:
            if _status(error) == 404:
                raise ObjectNotFound(key) from None
            if _status(error) == 416:  # past the end: the empty slice, as a file read gives
                return b""
            raise
        return data

    async def size(self, name: str) -> int | None:
        return await asyncio.to_thread(self._size, self._key(name))

    def _size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise
        return int(head["ContentLength"])

    async def names(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, self._key(prefix) + "/")

    def _list(self, key_prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=key_prefix
        )
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(key[len(self.prefix) :] for key in keys)

    async def delete(self, name: str) -> None:
        key = self._key(name)
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def _status(error: Any) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def open_store(url: str) -> ObjectStore:
    """A store from its URL: a directory path or ``file:///dir``, or ``s3://bucket/prefix``.

    An S3 URL may name a non-AWS endpoint with ``?endpoint=http://host:port``; the
    credentials and region come from boto3's usual chain (environment, profile, role).
    """
    parts = urlsplit(url)
    if parts.scheme == "s3":
        query = parse_qs(parts.query)
        endpoint = query.get("endpoint", [None])[0]
        return S3Store(parts.netloc, parts.path, endpoint_url=endpoint)
    if parts.scheme in ("", "file"):
        return LocalStore(parts.path if parts.scheme else url)
    raise ValueError(f"unsupported object store URL {url!r} (a directory, file:// or s3://)")
