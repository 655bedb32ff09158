"""A small JSON file that running processes follow: written whole, re-read when it changes.

The chaos and deployment knobs (injected gRPC faults, pipeline defects, a canary's traffic
split) are each one such file: a command writes it, every process that names it in its
settings picks the new content up at its next look, with no restart and no RPC. A writer
replaces the file at once (a reader never sees half of it); a reader ``stat``s it and reads
it again only when its modification time moved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Replace the file's content with ``value`` as JSON, atomically."""
    part = f"{os.fspath(path)}.part"
    with open(part, "w") as file:
        json.dump(value, file)
    os.replace(part, path)


class WatchedFile(Generic[T]):
    """The content of ``path`` as ``read`` makes it, re-read only when the file changed;
    ``absent`` while there is no file."""

    def __init__(self, path: str, read: Callable[[str], T], absent: T) -> None:
        self.path = path
        self.read, self.absent = read, absent
        self.value = absent
        self._mtime: int | None = None

    def current(self) -> T:
        try:
            mtime: int | None = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            self.value = self.absent if mtime is None else self.read(self.path)
        return self.value
