"""CTA-5004 CMCD parsing: both modes, every key's type, and hostile input counted."""

from __future__ import annotations

import random
from urllib.parse import quote

from kernel.cmcd import MAX_PAYLOAD, CmcdStats, parse_headers, parse_query, split_query

# a player's payload in query mode, as dash.js writes it (keys sorted, URL-encoded)
PAYLOAD = (
    'bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,'
    'mtp=48100,nor="..%2F300kbps%2Ftrack.m4v",ot=v,rtp=12000,sf=d,'
    'sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,v=1'
)


def test_query_mode_gives_every_key_its_type() -> None:
    stats = CmcdStats()
    found = parse_query(quote(PAYLOAD, safe="").encode(), stats)
    assert found == {
        "bl": 21300,
        "br": 3200,
        "bs": True,
        "cid": "faec5fc2-ac30-11ea-bb37-0242ac130002",
        "d": 4004,
        "dl": 18500,
        "mtp": 48100,
        "nor": "..%2F300kbps%2Ftrack.m4v",  # CTA-5004: nor is sent URL-encoded
        "ot": "v",
        "rtp": 12000,
        "sf": "d",
        "sid": "6e2fb550-c457-11e9-bb97-0800200c9a66",
        "st": "v",
        "su": True,
        "v": 1,
    }
    assert stats.dropped == 0 and stats.payloads == 1


def test_header_mode_joins_the_four_headers() -> None:
    stats = CmcdStats()
    found = parse_headers(
        [b"br=3200,d=4004,ot=v", b"bl=21300,mtp=48100,su", b'sid="s1",st=l', b"bs=false,rtp=9000"],
        stats,
    )
    assert found == {
        "br": 3200,
        "d": 4004,
        "ot": "v",
        "bl": 21300,
        "mtp": 48100,
        "su": True,
        "sid": "s1",
        "st": "l",
        "bs": False,
        "rtp": 9000,
    }
    assert parse_headers([None, None, None, None], stats) == {}


def test_a_string_may_hold_a_comma_and_an_escaped_quote() -> None:
    found = parse_query(quote('sid="a,b\\"c",br=10', safe="").encode(), CmcdStats())
    assert found == {"sid": 'a,b"c', "br": 10}


def test_wrong_types_unknown_keys_and_bad_tokens_are_counted_and_dropped() -> None:
    stats = CmcdStats()
    bad = [
        "br=fast",  # integer expected
        "bl=-5",  # negative
        "mtp=99999999999",  # past the bound
        "ot=movie",  # not an object-type token
        "st=x",
        "sid=unquoted",  # a string must be quoted
        'cid="' + "x" * 65 + '"',  # past 64 characters
        'sid="a\x01b"',  # not printable
        "su=yes",  # a boolean is bare or =false
        "br",  # an integer needs a value
        "xyz=1",  # not a key we take
        "=",
    ]
    found = parse_query(quote(",".join([*bad, "br=800"]), safe="").encode(), stats)
    assert found == {"br": 800}
    assert stats.dropped == len(bad)


def test_an_oversized_payload_is_refused_whole() -> None:
    stats = CmcdStats()
    assert parse_query(b"br%3D1" + b"%2Cbr%3D1" * MAX_PAYLOAD, stats) == {}
    assert parse_headers([b"br=1," * MAX_PAYLOAD, b"bl=100"], stats) == {"bl": 100}
    assert stats.oversized == 2


def test_random_bytes_never_raise() -> None:
    rng = random.Random(5004)
    stats = CmcdStats()
    alphabet = b'br=,"\\%su0123456789abcdefot\xff\x00'
    for _ in range(2000):
        raw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        for value in (*parse_query(raw, stats).values(), *parse_headers([raw], stats).values()):
            assert isinstance(value, int | str | bool)
    assert stats.payloads == 4000


def test_split_query_takes_cmcd_out_and_keeps_the_rest_in_order() -> None:
    assert split_query(b"/live/c/v1/7.m4s?CMCD=br%3D1") == (b"/live/c/v1/7.m4s", b"br%3D1")
    assert split_query(b"/p.m3u8?_HLS_msn=7&CMCD=su&_HLS_part=2") == (
        b"/p.m3u8?_HLS_msn=7&_HLS_part=2",
        b"su",
    )
    assert split_query(b"/a/CMCD=x") == (b"/a/CMCD=x", None)
    assert split_query(b"/a?XCMCD=x") == (b"/a?XCMCD=x", None)


def test_lower_case_escapes_and_other_escapes_decode_alike() -> None:
    stats = CmcdStats()
    assert parse_query(b"br%3d10%2cbl%3d100", stats) == {"br": 10, "bl": 100}
    assert parse_query(b"sid%3D%22a%20b%22%2Csu", stats) == {"sid": "a b", "su": True}
    assert stats.dropped == 0
