"""Conformance of aiokafka (the client Faust uses) with the broker: topics, an idempotent
producer with keys and headers, a group of two that commits and is resumed from its
commit, and a compacted topic read back to its latest values.

    python aiokafka_client.py HOST:PORT
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOTSTRAP = sys.argv[1]


async def produce(records, topic):
    p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True, acks="all")
    await p.start()
    try:
        for key, value in records:
            await p.send_and_wait(topic, value, key=key, headers=[("tg-stamps", b"py:1:2")])
    finally:
        await p.stop()


def consumer(topic, group):
    return AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", session_timeout_ms=6000,
                            heartbeat_interval_ms=500)


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic("py-aio", 4, 1),
                               NewTopic("py-aio-compact", 1, 1, topic_configs={"cleanup.policy": "compact"})])
    await admin.close()
    await produce([(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)], "py-aio")

    a, b = consumer("py-aio", "py-aio-group"), consumer("py-aio", "py-aio-group")
    await a.start()
    await b.start()
    seen = set()

    async def drain(c):
        while True:
            batch = await c.getmany(timeout_ms=50)
            for msgs in batch.values():
                for m in msgs:
                    assert list(m.headers) == [("tg-stamps", b"py:1:2")], m.headers
                    seen.add((m.partition, m.offset))
            if len(seen) >= 100 and a.assignment() and b.assignment():
                return

    await asyncio.wait_for(asyncio.gather(drain(a), drain(b)), 60)
    parts = [{tp.partition for tp in c.assignment()} for c in (a, b)]
    assert parts[0].isdisjoint(parts[1]) and len(parts[0] | parts[1]) == 4, parts
    # Commit what was read, by partition: a member that joined late may not have read its
    # partitions itself (the other member did, before the rebalance).
    ends = {}
    for p, o in seen:
        ends[p] = max(ends.get(p, 0), o + 1)
    for c in (a, b):
        # aiokafka commits only a member's own partitions.
        await c.commit({tp: ends[tp.partition] for tp in c.assignment() if tp.partition in ends})
    for c in (a, b):
        await c.stop()

    await produce([(f"late{i}".encode(), b"x") for i in range(10)], "py-aio")
    again = consumer("py-aio", "py-aio-group")
    await again.start()
    late = []
    while len(late) < 10:
        batch = await asyncio.wait_for(again.getmany(timeout_ms=100), 60)
        late += [m.key for msgs in batch.values() for m in msgs]
    extra = await again.getmany(timeout_ms=1000)
    assert not any(extra.values()), "read past the commit again"
    assert len(late) == 10 and all(k.startswith(b"late") for k in late), late
    await again.stop()

    await produce([(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", b"2")], "py-aio-compact")
    c = consumer("py-aio-compact", "py-aio-compact-reader")
    await c.start()
    latest = {}
    while latest != {b"a": b"2", b"b": b"2", b"c": b"1"}:
        batch = await asyncio.wait_for(c.getmany(timeout_ms=100), 60)
        for msgs in batch.values():
            for m in msgs:
                latest[m.key] = m.value
    await c.stop()
    print("aiokafka: ok")


asyncio.run(main())
