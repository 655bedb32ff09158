"""Pure logic of the edge node: cache policy, rendezvous order, ranges, store, fill."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from edge import ranges, rendezvous
from edge.fill import Fill
from edge.policy import decide, parse_cache_control
from edge.store import Store

# -- cache policy ------------------------------------------------------------------------


def test_immutable_segments_live_until_evicted() -> None:
    policy = decide(200, "public, max-age=31536000, immutable")
    assert policy.store and policy.immutable and math.isinf(policy.lifetime_s)


def test_short_mpd_takes_age_off_and_gets_default_swr() -> None:
    policy = decide(200, "public, max-age=1", age_s=0.25, default_swr_s=2.0)
    assert policy.store and policy.ttl_s == pytest.approx(0.75) and policy.swr_s == 2.0
    assert decide(200, "max-age=1, must-revalidate", default_swr_s=2.0).swr_s == 0.0
    assert decide(200, "max-age=1, stale-while-revalidate=5").swr_s == 5.0
    assert decide(200, "max-age=1, s-maxage=3").ttl_s == 3.0


@pytest.mark.parametrize(
    "header", ["no-store", "private, max-age=60", "no-cache", None, "public", "max-age=abc"]
)
def test_never_store_what_we_are_told_not_to_or_not_told_how_long(header: str | None) -> None:
    assert not decide(200, header).store


def test_negative_caching_never_outlives_a_chunk() -> None:
    assert decide(404, "max-age=60", negative_ttl_max_s=0.2).ttl_s == 0.2
    assert decide(404, "max-age=0").store is False
    assert decide(410, "max-age=1", negative_ttl_max_s=0.2).ttl_s == 0.2
    assert not decide(503, "max-age=60").store
    assert not decide(206, "max-age=60").store


def test_parse_cache_control() -> None:
    assert parse_cache_control('Public, MAX-AGE="5", immutable') == {
        "public": None,
        "max-age": "5",
        "immutable": None,
    }


# -- rendezvous ----------------------------------------------------------------------------


def test_rendezvous_is_stable_and_spreads() -> None:
    parents = ["http://s1", "http://s2", "http://s3"]
    firsts = Counter(rendezvous.order(parents, f"/live/c/e/v/{n}.m4s")[0] for n in range(3000))
    assert set(firsts) == set(parents)
    assert min(firsts.values()) > 800
    assert rendezvous.order(parents, "/x") == rendezvous.order(list(reversed(parents)), "/x")


def test_rendezvous_removal_moves_only_the_removed_parents_objects() -> None:
    parents = ["http://s1", "http://s2", "http://s3"]
    keys = [f"/live/c/e/v/{n}.m4s" for n in range(1000)]
    before = {k: rendezvous.order(parents, k)[0] for k in keys}
    after = {k: rendezvous.order(parents[:2], k)[0] for k in keys}
    for k in keys:
        if before[k] != "http://s3":
            assert after[k] == before[k]
        else:  # goes to its second choice
            assert after[k] == rendezvous.order(parents, k)[1]


# -- ranges ----------------------------------------------------------------------------------


def test_ranges() -> None:
    assert ranges.parse(b"bytes=0-9", 100) == (0, 9)
    assert ranges.parse(b"bytes=90-", 100) == (90, 99)
    assert ranges.parse(b"bytes=-10", 100) == (90, 99)
    assert ranges.parse(b"bytes=50-999999999999", 100) == (50, 99)
    for ignored in (
        b"bytes=0-1,5-6",
        b"items=0-1",
        b"bytes=9-1",
        b"bytes=x-",
        b"bytes=" + b"9" * 40,
    ):
        assert ranges.parse(ignored, 100) is None
    with pytest.raises(ranges.Unsatisfiable):
        ranges.parse(b"bytes=100-", 100)
    views = ranges.slices([b"abc", b"defg", b"hi"], 2, 7)
    assert b"".join(bytes(v) for v in views) == b"cdefgh"


# -- store -----------------------------------------------------------------------------------


def make(key: str, size: int) -> Fill:
    fill = Fill(key, 0.0)
    fill.feed(b"x" * size)
    fill.finish()
    return fill


def test_store_is_bounded_by_bytes() -> None:
    store = Store(1000)
    for n in range(100):
        store.put(make(f"/k{n}", 60))
        assert store.bytes <= 1000
    assert store.bytes == sum(
        f.size for f in [*store.probation.values(), *store.protected.values()]
    )
    assert len(store) == 16


def test_flood_of_one_hit_urls_does_not_evict_the_hot_live_window() -> None:
    store = Store(10_000)
    hot = [f"/live/c/e/v/{n}.m4s" for n in range(5)]
    for key in hot:
        store.put(make(key, 1000))
        assert store.get(key) is not None  # a second viewer: promoted
    for n in range(1000):
        store.put(make(f"/vod/scan/{n}", 500))
    assert all(key in store for key in hot)
    assert store.bytes <= 10_000


def test_store_counts_a_growing_fill_and_drops_oversized_objects() -> None:
    store = Store(1000, max_object_share=0.5)
    fill = Fill("/live/seg", 0.0)
    store.put(fill)
    fill.feed(b"x" * 300)
    assert store.bytes == 300
    fill.feed(b"x" * 300)  # 600 > max object 500: not kept, still fed
    assert "/live/seg" not in store and store.bytes == 0
    assert fill.size == 600


def test_store_replace_and_remove() -> None:
    store = Store(1000)
    store.put(make("/a", 100))
    store.put(make("/a", 200))
    assert store.bytes == 200 and len(store) == 1
    store.get("/a")
    store.remove("/a")
    assert store.bytes == 0 and store.protected_bytes == 0 and len(store) == 0


# -- fill (read-while-writer) -------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def on_head(self, fill: Fill) -> None:
        self.events.append(("head", str(fill.status).encode()))

    def on_data(self, fill: Fill, piece: bytes) -> None:
        self.events.append(("data", piece))

    def on_end(self, fill: Fill) -> None:
        self.events.append(("end", b""))

    def on_error(self, fill: Fill) -> None:
        self.events.append(("error", b""))


def test_fill_pushes_each_piece_to_every_waiter_in_order() -> None:
    fill = Fill("/k", 0.0)
    early = Recorder()
    fill.subscribe(early)
    fill.set_head(200, [], None, decide(200, "max-age=31536000, immutable"), now=1.0)
    fill.feed(b"one")
    late = Recorder()  # a late joiner is handed fill.pieces by its caller, then events
    assert fill.pieces == [b"one"]
    fill.subscribe(late)
    fill.feed(b"two")
    fill.finish()
    assert early.events == [("head", b"200"), ("data", b"one"), ("data", b"two"), ("end", b"")]
    assert late.events == [("data", b"two"), ("end", b"")]
    assert fill.complete and fill.size == 6 and fill.subscribers == []
    assert fill.fresh(10**9)


def test_fill_failure_reaches_waiters_and_expiry_uses_policy() -> None:
    fill = Fill("/m.mpd", 0.0)
    rec = Recorder()
    fill.subscribe(rec)
    fill.set_head(200, [], None, decide(200, "max-age=1", default_swr_s=2.0), now=10.0)
    assert fill.fresh(10.5) and not fill.fresh(11.0)
    assert fill.usable_stale(12.9) and not fill.usable_stale(13.0)
    fill.fail("parent gone")
    assert rec.events[-1] == ("error", b"") and not fill.complete
