"""Cost per event of receive plus forward, on the headers an event has after two stages:
    python clients/python/bench.py
"""

import timeit

import tailgate_probe as tp

HEADERS = [
    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tg-intended", b"1700000000000000000"),
    ("tg-stamps", b"connector:1700000000000000100:1700000000000000200,agent:1700000000000000300:1700000000000000400"),
    ("content-type", b"application/json"),
]


def one():
    tp.forward(tp.receive(HEADERS), stage="my-agent")


if __name__ == "__main__":
    n = 200_000
    best = min(timeit.repeat(one, number=n, repeat=5)) / n
    r = min(timeit.repeat(lambda: tp.receive(HEADERS), number=n, repeat=5)) / n
    print(f"receive + forward: {best * 1e6:.2f} µs per event (receive alone {r * 1e6:.2f} µs), best of 5 x {n}")
