"""The one place a process picks its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from kernel.config import OnOff

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], uvloop: OnOff = "on") -> T:
    """``asyncio.run`` on uvloop (libuv's loop: cheaper socket reads and writes for
    aiohttp and redis; gRPC's own I/O does not use the loop's), or on asyncio's own loop
    when the process's ``uvloop`` setting (``LIVEMESH_UVLOOP``) is ``off``."""
    if uvloop == "off":
        return asyncio.run(main)
    import uvloop as libuv_loop

    with asyncio.Runner(loop_factory=libuv_loop.new_event_loop) as runner:
        return runner.run(main)
