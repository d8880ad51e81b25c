"""receive and forward on the clients' own message types, foreign and malformed headers,
and the dead-letter headers."""

import aiokafka.structs
import confluent_kafka
import pytest

import tailgate_probe as tp

TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GOOD = [("content-type", b"text/plain"), ("traceparent", TP), ("tg-intended", b"1000"), ("tg-stamps", b"connector:1100:1200")]


def as_dict(headers):
    return {k: v for k, v in headers}


def test_forward_appends_a_stamp_and_makes_a_child_span_of_the_same_trace():
    inc = tp.receive(GOOD, now_ns=2_000)
    assert inc.ok and inc.sampled
    out = tp.forward(inc, stage="my-agent", egress_ns=2_500)
    h = as_dict(out)
    assert h["tg-stamps"] == b"connector:1100:1200,my-agent:2000:2500"
    child = h["traceparent"].decode()
    assert child.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and child.endswith("-01")
    assert child[36:52] not in ("00f067aa0ba902b7", "0" * 16)
    assert h["tg-intended"] == b"1000"
    assert h["content-type"] == b"text/plain", "foreign headers pass through"
    # The output is itself a valid event for the next stage.
    nxt = tp.receive(out, now_ns=3_000)
    assert nxt.ok and nxt.stamp_list() == [("connector", 1100, 1200), ("my-agent", 2000, 2500)]
    assert nxt.trace_id == inc.trace_id and nxt.flags == inc.flags


def test_an_unsampled_trace_stays_unsampled():
    inc = tp.receive([("traceparent", TP[:-2] + b"00"), ("tg-intended", b"1")], now_ns=5)
    assert not inc.sampled
    assert as_dict(tp.forward(inc, "s", egress_ns=6))["traceparent"].endswith(b"-00")


def test_egress_never_comes_before_ingress():
    inc = tp.receive(GOOD, now_ns=5_000)
    assert as_dict(tp.forward(inc, "s", egress_ns=4_000))["tg-stamps"].endswith(b",s:5000:5000")


def test_times_default_to_now():
    inc = tp.receive(GOOD)
    out = tp.forward(inc, "s")
    stage, ingress, egress = tp.receive(out).stamp_list()[-1]
    assert stage == "s" and 0 < ingress <= egress


def test_confluent_kafka_messages_are_read_as_they_come():
    m = confluent_kafka.Message(topic="t", partition=0, value=b"v", headers=GOOD + [("empty", None)])
    inc = tp.receive(m, now_ns=2_000)
    assert inc.ok and inc.intended_ns == 1000
    out = tp.forward(inc, "py-stage", egress_ns=2_001)
    # What confluent-kafka's produce() takes: (str, bytes) pairs.
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in out)
    assert confluent_kafka.Message(topic="t", headers=out).headers() == out


def test_a_confluent_message_without_headers_is_reported_not_raised():
    inc = tp.receive(confluent_kafka.Message(topic="t", value=b"v"))
    assert inc.error == "header `traceparent` is missing"


def test_aiokafka_consumer_records_are_read_as_they_come():
    r = aiokafka.structs.ConsumerRecord(
        topic="t", partition=0, offset=7, timestamp=0, timestamp_type=0, key=None, value=b"v",
        checksum=None, serialized_key_size=0, serialized_value_size=1, headers=tuple(GOOD),
    )
    inc = tp.receive(r, now_ns=2_000)
    assert inc.ok and inc.stamp_list() == [("connector", 1100, 1200)]


class FaustEvent:
    """What a Faust agent's `stream.events()` yields, as far as headers go: `headers` is a
    mapping of str to bytes (faust-streaming), or a list of pairs."""

    def __init__(self, headers):
        self.headers = headers


@pytest.mark.parametrize("headers", [dict(GOOD), list(GOOD)])
def test_faust_event_headers_are_read_as_a_mapping_or_pairs(headers):
    inc = tp.receive(FaustEvent(headers), now_ns=2_000)
    assert inc.ok and inc.intended_ns == 1000


def test_foreign_and_malformed_headers_never_raise():
    for junk in [None, 7, "text", [("traceparent",)], [(1, b"x")], [("traceparent", 5)], {b"traceparent": TP}, object()]:
        inc = tp.receive(junk)
        assert isinstance(inc, tp.Incoming)
    # Names as bytes are read as UTF-8, so a Faust mapping with bytes keys still works.
    assert tp.receive({b"traceparent": TP, b"tg-intended": b"3"}).ok


def test_a_refused_event_goes_on_unchanged_and_is_dead_lettered_with_why():
    bad = [("traceparent", b"00-nope"), ("tg-intended", b"1"), ("x", b"y")]
    inc = tp.receive(bad)
    assert inc.error == "header `traceparent` is malformed: shorter than 55 bytes"
    assert tp.forward(inc, "s") == bad
    dl = as_dict(tp.dead_letter(inc, "my-agent"))
    assert dl["tg-dlq-reason"] == inc.error.encode()
    assert dl["tg-dlq-stage"] == b"my-agent"
    assert dl["x"] == b"y"


def test_a_bad_stage_name_is_the_callers_bug():
    with pytest.raises(ValueError):
        tp.forward(tp.receive(GOOD), "My Agent")
