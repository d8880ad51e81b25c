"""Conformance of kafka-python with the broker: topics, an idempotent producer with keys
and headers, a group of two that commits and is resumed from its commit, and a compacted
topic read back to its latest values.

    python kafka_python_client.py HOST:PORT
"""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
DEADLINE = 60.0


def produce(records, topic):
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True, acks="all")
    for key, value in records:
        p.send(topic, value=value, key=key, headers=[("tg-stamps", b"py:1:2")]).get(timeout=30)
    p.close()


def consumer(topic, group):
    return KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic("py-kp", 4, 1),
                         NewTopic("py-kp-compact", 1, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    produce([(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)], "py-kp")

    a, b = consumer("py-kp", "py-kp-group"), consumer("py-kp", "py-kp-group")
    seen, start = set(), time.time()

    def settled():
        # Both members hold partitions, and none twice: a member keeps its old assignment
        # until its own poll takes part in the rebalance, so the group is looked at until
        # both have.
        parts = [{tp.partition for tp in c.assignment()} for c in (a, b)]
        return all(parts) and parts[0].isdisjoint(parts[1]) and len(parts[0] | parts[1]) == 4

    while len(seen) < 100 or not settled():
        assert time.time() - start < DEADLINE, f"group read {len(seen)} of 100"
        for c in (a, b):
            for msgs in c.poll(timeout_ms=50).values():
                for m in msgs:
                    assert list(m.headers) == [("tg-stamps", b"py:1:2")], m.headers
                    seen.add((m.partition, m.offset))
    parts = [{tp.partition for tp in c.assignment()} for c in (a, b)]
    assert parts[0].isdisjoint(parts[1]) and len(parts[0] | parts[1]) == 4, parts
    # Commit what was read, by partition: a member that joined late may not have read its
    # partitions itself (the other member did, before the rebalance).
    ends = {}
    for p, o in seen:
        ends[p] = max(ends.get(p, 0), o + 1)
    a.commit({TopicPartition("py-kp", p): OffsetAndMetadata(o, None, -1) for p, o in ends.items()})
    for c in (a, b):
        c.close()

    produce([(f"late{i}".encode(), b"x") for i in range(10)], "py-kp")
    again = consumer("py-kp", "py-kp-group")
    late, start = [], time.time()
    while len(late) < 10:
        assert time.time() - start < DEADLINE, f"resumed read {late}"
        late += [m.key for msgs in again.poll(timeout_ms=100).values() for m in msgs]
    assert not any(again.poll(timeout_ms=1000).values()), "read past the commit again"
    assert len(late) == 10 and all(k.startswith(b"late") for k in late), late
    again.close()

    produce([(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", b"2")], "py-kp-compact")
    c = consumer("py-kp-compact", "py-kp-compact-reader")
    latest, start = {}, time.time()
    while latest != {b"a": b"2", b"b": b"2", b"c": b"1"}:
        assert time.time() - start < DEADLINE, latest
        for msgs in c.poll(timeout_ms=100).values():
            for m in msgs:
                latest[m.key] = m.value
    c.close()
    print("kafka-python: ok")


main()
