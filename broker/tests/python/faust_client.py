"""A real Faust app against the broker: records with headers go into py-faust-in, the
app (faust_forward.py, run as a worker process) forwards them, and every one comes out of
py-faust-out with its headers and the app's stamp appended (by the probe library).

    python faust_client.py HOST:PORT
"""

import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
N = 20

admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
for f in admin.create_topics([NewTopic("py-faust-in", 1, 1), NewTopic("py-faust-out", 1, 1)]).values():
    f.result(timeout=30)

app = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faust_forward.py")
worker = subprocess.Popen([sys.executable, app, BOOTSTRAP, "worker", "--loglevel", "warn"])
try:
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
    for i in range(N):
        p.produce("py-faust-in", key=f"k{i}".encode(), value=f"v{i}".encode(),
                  headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                           ("tg-intended", b"1"), ("tg-stamps", b"loadgen:1:1"), ("x-foreign", b"kept")])
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "py-faust-reader", "auto.offset.reset": "earliest"})
    c.subscribe(["py-faust-out"])
    got, start = [], time.time()
    while len(got) < N:
        assert time.time() - start < 120, f"forwarded {len(got)} of {N}"
        assert worker.poll() is None, f"the Faust worker exited with {worker.returncode}"
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m)
    for m in got:
        h = dict(m.headers())
        stamps = h["tg-stamps"].split(b",")
        assert stamps[0] == b"loadgen:1:1" and stamps[1].startswith(b"faust:"), h
        _, ingress, egress = stamps[1].split(b":")
        assert 0 < int(ingress) <= int(egress), h
        assert h["traceparent"].startswith(b"00-0af7651916cd43dd8448eb211c80319c-"), h
        assert h["traceparent"][36:52] != b"b7ad6b7169203331", "a child span"
        assert h["tg-intended"] == b"1" and h["x-foreign"] == b"kept", h
    assert sorted(m.key() for m in got) == sorted(f"k{i}".encode() for i in range(N))
    c.close()
    print("faust: ok")
finally:
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
