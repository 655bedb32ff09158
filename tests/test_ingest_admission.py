"""Admission of new ingest sessions, without sockets: per-client and global limits."""

from __future__ import annotations

from live.ingest.admission import Admission, Verdict
from live.ingest.amf0 import decode_amf0
from live.ingest.rtmp_messages import CommandReader, connect_rejected, publish_status


def test_a_client_over_its_rate_is_limited_while_others_get_in() -> None:
    admission = Admission(client_rate=1, client_burst=3, global_rate=100, global_burst=100)
    verdicts = []
    for _ in range(5):
        verdicts.append(admission.admit("10.0.0.1", 1000))
        admission.done()
    assert verdicts == [Verdict.ADMITTED] * 3 + [Verdict.CLIENT_LIMITED] * 2
    assert admission.retry_after_s("10.0.0.1") == 1
    assert admission.admit("10.0.0.2", 1000) is Verdict.ADMITTED  # someone else: not affected
    admission.done()
    assert admission.admit("10.0.0.1", 2000) is Verdict.ADMITTED  # one token a second comes back


def test_the_process_refuses_past_its_global_rate_and_pending_bound() -> None:
    admission = Admission(client_rate=100, client_burst=100, global_rate=1, global_burst=4)
    assert [admission.admit(f"10.0.0.{i}", 0) for i in range(5)] == (
        [Verdict.ADMITTED] * 4 + [Verdict.OVERLOADED]
    )
    bounded = Admission(client_rate=100, client_burst=100, max_pending=2)
    assert bounded.admit("a", 0) is Verdict.ADMITTED
    assert bounded.admit("b", 0) is Verdict.ADMITTED
    assert bounded.admit("c", 0) is Verdict.OVERLOADED  # two attempts still negotiating
    bounded.done()
    assert bounded.admit("c", 0) is Verdict.ADMITTED


def test_refusal_replies_are_rtmp_command_messages_a_client_can_read() -> None:
    reply = publish_status(1, "NetStream.Publish.BadName", "wrong stream key " + "x" * 150)
    reader = CommandReader()
    reader._handshake_left = 0  # a server-to-client stream has no C0-C2 to skip
    ((name, args),) = reader.feed(reply)
    assert name == "onStatus" and reader.stream_id == 1
    assert args[2]["code"] == "NetStream.Publish.BadName"
    assert args[2]["description"].startswith("wrong stream key")
    assert decode_amf0(connect_rejected(1.0, "no")[12:])[0] == "_error"
