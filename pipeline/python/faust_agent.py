"""The reference pipeline's agent as a Faust worker (faust-streaming): `[agent] kind = "faust"`.

It does the Rust agent's job (pipeline/src/agent) the Faust way. story.actions is read by
the group `tailgate-agent`, one actor per partition (`isolated_partitions`), so a session's
events are processed in order and partitions in parallel. Per session it keeps its state
in a Faust table whose changelog is `story.agent-changelog`, in the Rust agent's own key
and value format (16 bytes of run and session; JSON), so either agent can take over the
other's state. It reads the session's context from the edge cache (SQLite, or Redis),
fetching the next one ahead; builds the prompt from state, context and action; calls the
model (simulated, or an OpenAI-compatible endpoint); and sends the beat to story.beats with
its stamp and a child span through the probe library (tailgate_probe). What it cannot
process goes to story.dlq with the reason.

At-least-once, as Faust gives it: an event is acknowledged once its beat and its changelog
record are handed to the producer, and offsets are committed only after the producer is
flushed. An event read again after a crash is recognised from the state (by id among the
last 16, or by input offset) and emitted again with the beat number it had, without
changing the state; the gateway drops the repeat by id.

The run starts it (pipeline/src/agent/faust.rs) with its settings as JSON in
TAILGATE_FAUST_AGENT and reads one JSON line of figures from its stdout every 200 ms; all
logging goes to stderr.

    TAILGATE_FAUST_AGENT='{"bootstrap": "127.0.0.1:9092", ...}' python faust_agent.py
"""

import asyncio
import json
import math
import os
import platform
import random
import sqlite3
import sys
import time

# Figures go to the real stdout; anything else printed (Faust's banner) goes to stderr.
_FIGURES = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

import faust  # noqa: E402
import tailgate_probe  # noqa: E402

CONFIG = json.loads(os.environ.get("TAILGATE_FAUST_AGENT", "{}"))
STAGE = "agent"
REMEMBERED = 16
# The largest record it produces (message.max.bytes), and how much of an oversized dead
# letter's text is kept (the Rust stages' KEEP).
MAX_RECORD = CONFIG.get("max_record_bytes", 1_000_000)
KEEP = 1024
# The run's topic prefix (`[broker] topic_prefix`) goes before every topic's name.
PREFIX = CONFIG.get("topic_prefix", "")
ACTIONS, BEATS, DLQ, CHANGELOG = (
    PREFIX + t for t in ("story.actions", "story.beats", "story.dlq", "story.agent-changelog")
)
RUN = CONFIG.get("run")  # only this run's sessions count as restored (None: every run's)

app = faust.App(
    CONFIG.get("group", "tailgate-agent"),
    broker=f"kafka://{CONFIG.get('bootstrap', '127.0.0.1:9092')}",
    store="memory://",
    processing_guarantee="at_least_once",
    topic_partitions=CONFIG.get("partitions", 3),
    topic_replication_factor=1,
    topic_disable_leader=True,
    table_standby_replicas=0,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=CONFIG.get("session_timeout_s", 10.0),
    broker_heartbeat_interval=CONFIG.get("heartbeat_interval_s", 1.0),
    producer_linger=CONFIG.get("linger_s", 0.0),
    producer_compression_type=CONFIG.get("compression"),
    producer_acks=-1,
    stream_wait_empty=False,
    web_enabled=False,
)
raw = {"key_serializer": "raw", "value_serializer": "raw"}
actions = app.topic(ACTIONS, **raw)
beats = app.topic(BEATS, **raw)
dead_letters = app.topic(DLQ, **raw)
changelog_read = 0


async def on_changelog_event(event):
    """Counts the changelog records recovery reads."""
    global changelog_read
    changelog_read += 1


sessions = app.Table(
    "sessions",
    default=None,
    partitions=CONFIG.get("partitions", 3),
    key_type=bytes,  # raw bytes both ways: the Rust agent's own format
    value_type=bytes,
    on_changelog_event=on_changelog_event,
    changelog_topic=app.topic(CHANGELOG, partitions=CONFIG.get("partitions", 3), compacting=True, **raw),
)

figures = {
    "forwarded": 0,
    "dead_lettered": 0,
    "replays": 0,
    "model_failures": 0,
    "context_hits": 0,
    "context_misses": 0,
    "context_errors": 0,
    "skipped": 0,
}
first_skip = None
started = time.monotonic()
PARENT = os.getppid()


def clip(s, n):
    """The first n characters of s."""
    return s[:n]


def state_key(run, session):
    return run.to_bytes(8, "big") + session.to_bytes(8, "big")


def replay(state, event_id, offset):
    """The beat number an event already applied got, or None (SessionState::replay)."""
    applied = state["applied"]
    if event_id in applied:
        return state["actions"] - (len(applied) - 1 - applied.index(event_id))
    last = state.get("last_offset")
    if last is not None and offset <= last:
        return max(max(state["actions"] + 1 - len(applied), 0) - 1, 1)
    return None


def compose(state, event, offset, context, history):
    """The beat for the event and whether the state changed (the Rust agent's compose)."""
    action = clip(event["action"], 48)
    replayed = replay(state, event["id"], offset)
    number = replayed if replayed is not None else state["actions"] + 1
    story_so_far = "; ".join(state["recent"]) if state["recent"] else "nothing yet"
    setting = ""
    if context is not None:
        try:
            c = json.loads(context)
        except ValueError:
            c = None
        if c is not None:
            c = c if isinstance(c, dict) else {}
            character = c.get("character") if isinstance(c.get("character"), str) else "a stranger"
            world = c.get("world") if isinstance(c.get("world"), str) else "an unknown land"
            setting = f" The hero is {character}, in {world}."
    prompt = (
        f"Session {event['session']} at beat {number}.{setting} The story so far: {story_so_far}. "
        f"The player now: {action}. Continue the story in one vivid sentence."
    )
    text = f'Beat {number}: the tale turns on "{clip(action, 16)}".'
    if replayed is None:
        state["actions"] = number
        if len(state["applied"]) == REMEMBERED:
            state["applied"].pop(0)
        state["applied"].append(event["id"])
        state["last_offset"] = offset
        if len(state["recent"]) == history:
            state["recent"].pop(0)
        if history > 0:
            state["recent"].append(clip(action, 16))
    return {"number": number, "prompt": prompt, "text": text}, replayed is None


class Model:
    """`simulated` (a latency drawn from fixed, uniform or lognormal) or `http`."""

    def __init__(self, spec, seed):
        self.spec = spec
        self.rng = random.Random(seed)
        self.slots = asyncio.Semaphore(max(1, spec.get("max_in_flight", 16)))
        self.session = None

    def draw(self):
        s = self.spec
        kind = s.get("latency", "fixed")
        if kind == "uniform":
            return self.rng.uniform(s["min_s"], s["max_s"])
        if kind == "lognormal":
            return min(self.rng.lognormvariate(math.log(max(s["median_s"], 1e-9)), s["sigma"]), 3600.0)
        return s.get("value_s", 0.0)

    async def call(self, prompt, fallback):
        """The reply, or raises RuntimeError saying why the call failed."""
        if self.spec.get("kind") != "http":
            d = self.draw()
            if d > 0:
                await asyncio.sleep(d)
            return fallback
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        url = self.spec["url"].rstrip("/") + "/chat/completions"
        body = {"model": self.spec["model"], "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
        timeout = self.spec["timeout_s"]
        try:
            async with self.slots:
                async with self.session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    data = await r.read()
                    if r.status >= 300:
                        raise RuntimeError(f"model answered {r.status} {r.reason}: {data.decode('utf-8', 'replace')}")
                    try:
                        return json.loads(data)["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        raise RuntimeError(f"model answer unreadable: {e}") from None
        except asyncio.TimeoutError:
            raise RuntimeError(f"model call timed out after {timeout}s") from None
        except aiohttp.ClientError as e:
            raise RuntimeError(f"model call to {url}: {e}") from None


class Cache:
    """The edge cache the context sink keeps: SQLite (`context` table) or Redis."""

    def __init__(self, at):
        self.at = at
        self.db = None
        self.redis = None

    async def get(self, session):
        if not self.at:
            return None
        if self.at.startswith(("redis://", "rediss://")):
            if self.redis is None:
                import redis.asyncio

                self.redis = redis.asyncio.from_url(self.at)
            v = await self.redis.get(f"tailgate:context:{session}")
            return v.decode("utf-8", "replace") if v is not None else None
        if self.db is None:
            self.db = sqlite3.connect(f"file:{self.at}?mode=ro", uri=True, timeout=2.0)
        row = self.db.execute("SELECT value FROM context WHERE session = ?", (session,)).fetchone()
        return row[0] if row else None


model = Model(CONFIG.get("model", {}), CONFIG.get("seed", 1))
cache = Cache(CONFIG.get("edge_cache"))
prefetched = {}


async def context_of(session):
    """The session's context: the prefetched answer, else a lookup now."""
    task = prefetched.pop(session, None)
    try:
        got = await task if task is not None else await cache.get(session)
    except Exception:  # an unreachable cache misses, and is counted
        figures["context_errors"] += 1
        return None
    figures["context_hits" if got is not None else "context_misses"] += 1
    return got


def size_of(key, value, headers):
    """A record's size as the broker counts it, near enough: key, value, headers, framing."""
    named = sum(len(k) + len(v or b"") + 8 for k, v in headers)
    return len(key or b"") + len(value or b"") + named + 128


def shrunk(value):
    """A dead letter's copy small enough to produce: a story event with its action and
    beat cut to KEEP characters (its run and id, which the run's audit reads, kept), or
    the first KEEP bytes of anything else."""
    try:
        story = json.loads(value)
        story["action"] = story["action"][:KEEP]
        if isinstance(story.get("beat"), dict):
            for k in ("prompt", "text"):
                story["beat"][k] = str(story["beat"].get(k, ""))[:KEEP]
        return json.dumps(story, separators=(",", ":")).encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        return (value or b"")[:KEEP]


async def dead_letter(event, incoming, reason):
    """The event, as it came, to story.dlq with the reason; cut down if it is too large for
    that; counted and skipped, loudly, if even that cannot be produced."""
    global first_skip
    value, headers = event.value, tailgate_probe.dead_letter(incoming, STAGE, reason)
    if size_of(event.key, value, headers) > MAX_RECORD:
        value = shrunk(value)
        why = f"{reason} (the copy cut to {KEEP} bytes: as it came, it is over the {MAX_RECORD} bytes a record may have)"
        headers = tailgate_probe.dead_letter(incoming, STAGE, why)
        if size_of(event.key, value, headers) > MAX_RECORD:
            figures["skipped"] += 1
            first_skip = first_skip or f"{why}; its headers alone are too large to dead-letter"
            print(f"error: stage {STAGE} skipped an event it could neither pass on nor dead-letter: {first_skip}", file=sys.stderr)
            return
    await dead_letters.send(key=event.key, value=value, headers=headers)
    figures["dead_lettered"] += 1


async def process(event):
    incoming = tailgate_probe.receive(event)
    if not incoming.ok:
        return await dead_letter(event, incoming, incoming.error)
    try:
        story = json.loads(event.value)
        run, session, event_id = int(story["run"]), int(story["session"]), int(story["id"])
        action = story["action"]
        if not isinstance(action, str):
            raise TypeError("action is not a string")
    except (ValueError, KeyError, TypeError) as e:
        return await dead_letter(event, incoming, f"the event is not a story event: {e}")
    if not action:
        return await dead_letter(event, incoming, "the action is empty: nothing to continue the story from")
    offset = event.message.offset
    context = await context_of(session)
    key = state_key(run, session)
    stored = sessions.get(key)
    state = json.loads(stored) if stored else {"actions": 0, "recent": [], "applied": []}
    beat, changed = compose(state, story, offset, context, CONFIG.get("history", 3))
    if changed:
        sessions[key] = json.dumps(state, separators=(",", ":")).encode()
    else:
        figures["replays"] += 1
    try:
        text = await model.call(beat["prompt"], beat["text"])
    except RuntimeError as e:
        figures["model_failures"] += 1
        return await dead_letter(event, incoming, str(e))
    if CONFIG.get("prefetch", True) and cache.at:
        prefetched[session] = asyncio.ensure_future(cache.get(session))
    story["beat"] = {"number": beat["number"], "prompt": beat["prompt"], "text": text}
    value = json.dumps(story, separators=(",", ":")).encode()
    headers = tailgate_probe.forward(incoming, stage=STAGE)
    size = size_of(event.key, value, headers)
    if size > MAX_RECORD:
        return await dead_letter(event, incoming, f"the beat is {size} bytes, over the {MAX_RECORD} bytes a record may have")
    await beats.send(key=event.key, value=value, headers=headers)
    figures["forwarded"] += 1


@app.agent(actions, isolated_partitions=True)
async def agent(stream):
    async for event in stream.events():
        await process(event)


def restored_sessions():
    """This run's sessions in the table (every run's when no run is named)."""
    prefix = RUN.to_bytes(8, "big") if RUN is not None else b""
    return sum(1 for k in sessions.keys() if k.startswith(prefix))


recovered = None


@app.timer(0.2)
async def report():
    """One line of figures: counts, readiness, CPU and, once, what recovery restored."""
    global recovered
    if os.getppid() != PARENT:
        # The run that started it is gone (killed): nothing reads these figures any more.
        os._exit(1)
    ready = bool(app.consumer.assignment()) and app.tables.recovery.completed.is_set() and not app.rebalancing
    line = dict(figures, ready=ready, cpu_s=time.process_time(), first_skip=first_skip)
    if ready and recovered is None:
        mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == ACTIONS)
        recovered = {
            "sessions": restored_sessions(),
            "warm_start_ms": (time.monotonic() - started) * 1e3,
            "partitions": mine,
            "records": changelog_read,
        }
        line["restored"] = recovered
    _FIGURES.write(json.dumps(line) + "\n")


def describe():
    return f"faust-streaming {faust.__version__}, Python {platform.python_version()}"


if __name__ == "__main__":
    _FIGURES.write(json.dumps({"runtime": describe()}) + "\n")
    sys.argv[1:] = ["worker", "--loglevel", CONFIG.get("loglevel", "warn"), "--without-web"]
    app.main()
