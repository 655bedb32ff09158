"""``livemesh demo --topology deploy/regions.toml``: two regions, each with its own shield and
edges on an address of its own. Press play ranks the viewer's region first and the other
after it; once one region's shield and edges are killed, press play for its viewers
hands out only the surviving region's edges, and the stack plays on."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

import aiohttp

from kernel.procfs import cmdline, descendants
from loadrig.cli import create_accounts
from tests.stack_helpers import ROOT, demo_stack

TOPOLOGY = ROOT / "deploy" / "regions.toml"
REGIONS = ("eu-west", "us-east")
EXPIRY_S = 60.0  # the registry drops an instance after three missed heartbeats


async def ranked_regions(
    http: aiohttp.ClientSession, gateway: str, token: str, region: str
) -> list[str]:
    """The regions of the edges press play hands a viewer in ``region``, best first."""
    async with http.post(
        f"{gateway}/v1/playback:start",
        json={"content": "channels/demo", "clientRegion": region, "maxUrls": 4},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 200, await response.text()
        session = (await response.json())["session"]
    return [url["region"] for url in session["manifestUrls"]]


def kill_region(root: int, region: str) -> list[int]:
    """SIGKILL every ``livemesh edge`` of ``region`` (its shield and edges)."""
    killed = []
    for pid in descendants(root):
        args = cmdline(pid)
        if "edge" in args and region in args:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


async def test_press_play_steers_by_region_and_falls_back_when_one_is_lost() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="livemesh-regions-"))
    args = ["--topology", str(TOPOLOGY), "--free-ports", "--run-dir", str(run_dir)]
    with demo_stack(("gateway", "mpd"), args=args) as stack:
        gateway = stack.announced["gateway"]
        (token,), _ = await create_accounts(gateway, 1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for region in REGIONS:
                (other,) = set(REGIONS) - {region}
                ranked = await ranked_regions(http, gateway, token, region)
                assert ranked == [region, region, other, other], (region, ranked)

            assert len(kill_region(stack.process.pid, "eu-west")) == 3
            killed_at = time.monotonic()
            # the registry learns of the loss from the missing heartbeats (no event to
            # wait for across processes: press play is asked again until it knows)
            ranked = await ranked_regions(http, gateway, token, "eu-west")
            while "eu-west" in ranked and time.monotonic() - killed_at < EXPIRY_S:
                await asyncio.sleep(0.5)
                ranked = await ranked_regions(http, gateway, token, "eu-west")
            steered_s = time.monotonic() - killed_at
            print(f"press play steered eu-west viewers to us-east {steered_s:.1f} s after the kill")
            assert ranked == ["us-east", "us-east"]
            assert stack.process.poll() is None  # the stack plays on
