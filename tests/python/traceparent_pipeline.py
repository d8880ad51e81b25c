"""A three-topic pipeline that carries only W3C trace context, as OpenTelemetry's Kafka
instrumentations propagate it: every record's `traceparent` header is injected from the
current span with OpenTelemetry's propagator, and each stage continues the trace it
extracts from its input (same trace id, a span id of its own).

    traceparent_pipeline.py produce BOOTSTRAP TOPIC COUNT RATE FOREIGN SENT_JSON
        COUNT traced records at RATE/s, then FOREIGN records without trace context.
    traceparent_pipeline.py relay BOOTSTRAP IN OUT EXPECT EXTRA SENT_JSON
        Reads traced records of IN (records without trace context are dropped), writes
        each to OUT in its trace, then EXTRA records in traces of their own (never seen
        upstream), and exits once EXPECT records were relayed.

Every stage keeps its own clock's account: the moment it produced each record, in
milliseconds with a fraction, by trace id, written to SENT_JSON at the end. A hop as the
stages measure it is the downstream stage's moment less the upstream one's. The record's
CreateTime is that moment in whole milliseconds, as a Kafka client sets it.
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("traceparent-pipeline")


def producer(bootstrap):
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "broker.address.family": "v4"})


def traced_headers():
    carrier = {}
    inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def send(p, topic, key, value, sent):
    """Produces in the current span's trace, noting the moment by trace id."""
    now = time.time() * 1000.0
    p.produce(topic, key=key, value=value, headers=traced_headers(), timestamp=int(now))
    sent[format(trace.get_current_span().get_span_context().trace_id, "032x")] = now


def produce(bootstrap, topic, count, rate, foreign, sent_json):
    p = producer(bootstrap)
    sent = {}
    start = time.monotonic()
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with tracer.start_as_current_span("story action", kind=trace.SpanKind.PRODUCER):
            send(p, topic, f"session-{i % 16}", f"action {i}", sent)
        p.poll(0)
    for i in range(foreign):
        p.produce(topic, key=f"untraced-{i}", value="no trace context")
    p.flush(30)
    with open(sent_json, "w") as f:
        json.dump(sent, f)


def relay(bootstrap, source, sink, expect, extra, sent_json):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"relay-{source}",
            "auto.offset.reset": "earliest",
            "broker.address.family": "v4",
            "fetch.wait.max.ms": 10,
        }
    )
    c.subscribe([source])
    p = producer(bootstrap)
    sent = {}
    relayed = 0
    deadline = time.monotonic() + 60
    while relayed < expect and time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        if "traceparent" not in headers:
            continue
        with tracer.start_as_current_span("relay", context=extract(headers), kind=trace.SpanKind.CONSUMER):
            send(p, sink, m.key(), m.value(), sent)
        relayed += 1
        p.poll(0)
    for i in range(extra):
        with tracer.start_as_current_span("orphan", kind=trace.SpanKind.PRODUCER):
            send(p, sink, f"orphan-{i}", "a trace never seen upstream", sent)
    p.flush(30)
    c.close()
    with open(sent_json, "w") as f:
        json.dump(sent, f)
    if relayed < expect:
        sys.exit(f"relayed {relayed} of {expect} records of {source}")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "produce":
        produce(args[0], args[1], int(args[2]), float(args[3]), int(args[4]), args[5])
    elif mode == "relay":
        relay(args[0], args[1], args[2], int(args[3]), int(args[4]), args[5])
    else:
        sys.exit(f"unknown mode {mode}")
