"""``make demo``'s process tree: it announces the MPD, serves it, and stops cleanly."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from tests.stack_helpers import alive, demo_stack, descendants


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_announces_a_playable_mpd_and_stops_without_leftovers(stop_signal: int) -> None:
    with demo_stack() as stack:
        with urllib.request.urlopen(stack.mpd_url, timeout=10) as response:
            assert response.status == 200
            assert b'type="dynamic"' in response.read()
        children = descendants(stack.process.pid)
        assert len(children) >= 3  # redis-server, origin, channel at least
        stack.process.send_signal(stop_signal)
        assert stack.process.wait(timeout=30) == 0
    assert not [pid for pid in children if alive(pid)]
