"""The HTTP wire contract's shared pieces (kernel/http), without sockets."""

from __future__ import annotations

from datetime import datetime

from kernel.http.cors import EDGE, GATEWAY, WHIP, wire
from kernel.http.errors import error_text
from kernel.http.time import http_iso


def test_time_is_http_iso_to_the_millisecond() -> None:
    assert http_iso(0) == "1970-01-01T00:00:00.000Z"
    assert http_iso(1_733_580_000_123) == "2024-12-07T14:00:00.123Z"
    for ms in (999, 1_000, 1_733_580_000_001, 4_102_444_799_999):
        assert round(datetime.fromisoformat(http_iso(ms)).timestamp() * 1000) == ms


def test_cors_policy_per_server_kind() -> None:
    assert wire(EDGE.response_headers()) == (
        b"Access-Control-Allow-Origin: *\r\n"
        b"Access-Control-Expose-Headers: Age, Date, X-Cache, CMSD-Static, CMSD-Dynamic\r\n"
    )
    assert EDGE.preflight_headers()["Access-Control-Max-Age"] == "86400"
    assert "Access-Control-Max-Age" not in WHIP.all_headers()  # WHIP states no max age
    app = GATEWAY.for_origin("https://app.example").all_headers()
    assert app["Access-Control-Allow-Origin"] == "https://app.example"
    assert app["Access-Control-Max-Age"] == "600"


def test_an_error_body_is_its_reason_on_one_line() -> None:
    assert error_text("unknown host") == "unknown host\n"
