"""A Faust (faust-streaming) app that forwards every record of py-faust-in to
py-faust-out with its headers, its stamp appended and a child span made by the probe
library (clients/python, installed in the venv by .ci/run).

    python faust_forward.py HOST:PORT worker
"""

import sys

import faust
import tailgate_probe

BOOTSTRAP = sys.argv.pop(1)

app = faust.App(
    "tailgate-faust-check",
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    topic_partitions=1,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
)
source = app.topic("py-faust-in", key_serializer="raw", value_serializer="raw")
sink = app.topic("py-faust-out", key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def forward(stream):
    async for event in stream.events():
        incoming = tailgate_probe.receive(event)
        assert incoming.ok, incoming.error
        await sink.send(key=event.key, value=event.value, headers=tailgate_probe.forward(incoming, stage="faust"))


if __name__ == "__main__":
    app.main()
