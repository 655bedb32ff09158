"""The object store's contract, run against both backends.

The S3 backend runs against moto's server mode over loopback HTTP: a stand-in for
S3 (the only S3-compatible server available here), not Amazon's service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kernel.objectstore import (
    InvalidName,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    check_name,
    open_store,
)
from tests.objectstore_helpers import moto_endpoint, s3_store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[ObjectStore]:
    backend: ObjectStore = (
        LocalStore(tmp_path) if request.param == "local" else s3_store(s3_endpoint)
    )
    yield backend
    await backend.close()


async def test_put_then_get_whole_and_ranges(store: ObjectStore) -> None:
    body = bytes(range(256)) * 4
    await store.put("t1/v0/1.m4s", body)
    assert await store.get("t1/v0/1.m4s") == body
    assert await store.get("t1/v0/1.m4s", 10, 19) == body[10:20]
    assert await store.get("t1/v0/1.m4s", 1000) == body[1000:]
    assert await store.size("t1/v0/1.m4s") == len(body)


async def test_same_body_again_is_a_no_op_but_another_body_is_refused(store: ObjectStore) -> None:
    await store.put("t1/manifest.mpd", b"first")
    await store.put("t1/manifest.mpd", b"first")
    with pytest.raises(ObjectExists):
        await store.put("t1/manifest.mpd", b"second")
    assert await store.get("t1/manifest.mpd") == b"first"


async def test_a_file_is_stored_as_read_once_and_never_replaced(
    store: ObjectStore, tmp_path: Path
) -> None:
    """An uploaded source goes in from disk; the same file again is a no-op, another is
    refused and the first stays."""
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    first.write_bytes(bytes(range(256)) * 4096)
    second.write_bytes(b"other" * 1000)
    await store.put_file("uploads/a/source", first)
    await store.put_file("uploads/a/source", first)
    with pytest.raises(ObjectExists):
        await store.put_file("uploads/a/source", second)
    assert await store.get("uploads/a/source") == first.read_bytes()


async def test_racing_writers_of_different_bodies_leave_one_whole_body(store: ObjectStore) -> None:
    bodies = [bytes([i]) * 50_000 for i in range(4)]
    results = await asyncio.gather(
        *(store.put("t1/race", b) for b in bodies), return_exceptions=True
    )
    won = [b for b, r in zip(bodies, results, strict=True) if r is None]
    assert len(won) == 1
    assert all(isinstance(r, ObjectExists) for r in results if r is not None)
    assert await store.get("t1/race") == won[0]


async def test_missing_objects(store: ObjectStore) -> None:
    assert await store.size("nope/x") is None
    with pytest.raises(ObjectNotFound):
        await store.get("nope/x")
    assert await store.names("nope") == []


async def test_names_under_a_prefix_and_delete(store: ObjectStore) -> None:
    for name in ("a/1", "a/b/2", "ab/3"):
        await store.put(name, name.encode())
    assert await store.names("a") == ["a/1", "a/b/2"]
    await store.delete("a/1")
    await store.delete("a/1")
    assert await store.names("a") == ["a/b/2"]


@pytest.mark.parametrize(
    "name", ["", "/abs", "a/../b", "..", "a//b", "a/", ".hidden", "a/.put-x", "a b", "a\\b"]
)
def test_names_that_could_escape_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


async def test_traversal_never_reaches_the_filesystem(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    store = LocalStore(tmp_path / "root")
    with pytest.raises(InvalidName):
        await store.get("../secret")


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    local = open_store(f"file://{tmp_path}")
    assert isinstance(local, LocalStore) and local.root == tmp_path
    s3 = open_store("s3://bucket/some/prefix?endpoint=http://127.0.0.1:1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")
    with pytest.raises(ValueError, match="unsupported"):
        open_store("ftp://x/y")
