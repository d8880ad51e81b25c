"""Conformance of confluent-kafka (librdkafka) with the broker: topics, an idempotent
producer with keys and headers, a group of two that commits and is resumed from its
commit, and a compacted topic read back to its latest values.

    python confluent_kafka_client.py HOST:PORT
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
DEADLINE = 60.0


def create(admin, name, partitions, config=None):
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    for f in futures.values():
        f.result(timeout=30)


def produce(records, topic):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all", "linger.ms": 0})
    errors = []
    for key, value in records:
        p.produce(topic, key=key, value=value, headers=[("tg-stamps", b"py:1:2")],
                  on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(30) == 0, "unacknowledged records"
    assert not errors, errors


def consumer(group):
    return Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 6000})


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    create(admin, "py-ck", 4)
    produce([(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)], "py-ck")

    a, b = consumer("py-ck-group"), consumer("py-ck-group")
    a.subscribe(["py-ck"])
    b.subscribe(["py-ck"])
    seen, by = set(), {0: 0, 1: 0}
    start = time.time()
    while len(seen) < 100 or not (a.assignment() and b.assignment()):
        assert time.time() - start < DEADLINE, f"group read {len(seen)} of 100"
        for i, c in enumerate((a, b)):
            m = c.poll(0.05)
            if m is None or m.error():
                continue
            assert m.headers() == [("tg-stamps", b"py:1:2")], m.headers()
            seen.add((m.partition(), m.offset()))
            by[i] += 1
    parts = [{tp.partition for tp in c.assignment()} for c in (a, b)]
    assert parts[0].isdisjoint(parts[1]) and len(parts[0] | parts[1]) == 4, parts
    # Commit what was read, by partition: a member that joined late may not have read its
    # partitions itself (the other member did, before the rebalance).
    ends = {}
    for p, o in seen:
        ends[p] = max(ends.get(p, 0), o + 1)
    a.commit(offsets=[TopicPartition("py-ck", p, o) for p, o in ends.items()], asynchronous=False)
    for c in (a, b):
        c.close()

    produce([(f"late{i}".encode(), b"x") for i in range(10)], "py-ck")
    again = consumer("py-ck-group")
    again.subscribe(["py-ck"])
    late, start = [], time.time()
    while len(late) < 10:
        assert time.time() - start < DEADLINE, f"resumed read {late}"
        m = again.poll(0.1)
        if m is not None and not m.error():
            late.append(m.key())
    extra = again.poll(1.0)
    assert extra is None or extra.error(), "read past the commit again"
    assert all(k.startswith(b"late") for k in late), late
    committed = again.committed([TopicPartition("py-ck", p) for p in range(4)], timeout=10)
    assert sum(tp.offset for tp in committed) == 100, committed
    again.close()

    create(admin, "py-ck-compact", 1, {"cleanup.policy": "compact"})
    produce([(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", b"2")], "py-ck-compact")
    c = consumer("py-ck-compact-reader")
    c.subscribe(["py-ck-compact"])
    latest, start = {}, time.time()
    while latest != {b"a": b"2", b"b": b"2", b"c": b"1"}:
        assert time.time() - start < DEADLINE, latest
        m = c.poll(0.1)
        if m is not None and not m.error():
            latest[m.key()] = m.value()
    c.close()
    print("confluent-kafka: ok")


main()
