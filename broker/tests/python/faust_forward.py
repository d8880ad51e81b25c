"""A Faust (faust-streaming) app that forwards every record of py-faust-in to
py-faust-out with its headers, appending its own stamp to `tg-stamps`.

    python faust_forward.py HOST:PORT worker
"""

import sys

import faust

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
        raw = event.headers or {}
        headers = list(raw.items()) if hasattr(raw, "items") else list(raw)
        stamps = b"".join(v for k, v in headers if k == "tg-stamps")
        kept = [(k, v) for k, v in headers if k != "tg-stamps"]
        kept.append(("tg-stamps", stamps + b",faust:1:2"))
        await sink.send(key=event.key, value=event.value, headers=kept)


if __name__ == "__main__":
    app.main()
