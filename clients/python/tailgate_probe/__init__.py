"""tailgate's header protocol for Python stages (docs/protocol.md).

A stage that receives an event calls ``receive`` on its headers, does its work, and sends
its output with the headers ``forward`` returns: the same trace with a child span id,
the intended time, and ``tg-stamps`` with the stage's own stamp appended. Foreign headers
pass through untouched. Nothing here raises on what an upstream sent: a missing or
malformed header comes back as ``incoming.error``, with the same text as tailgate's Rust
codec gives, fit for a dead-letter reason (``dead_letter``).

    incoming = tailgate_probe.receive(message)          # confluent-kafka, aiokafka, Faust
    ...
    producer.produce(topic, value, headers=tailgate_probe.forward(incoming, stage="my-agent"))
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "TRACEPARENT",
    "INTENDED",
    "STAMPS",
    "DLQ_REASON",
    "DLQ_STAGE",
    "Incoming",
    "receive",
    "forward",
    "dead_letter",
    "headers_of",
    "append_stamp",
    "valid_stage_name",
]

TRACEPARENT = "traceparent"
INTENDED = "tg-intended"
STAMPS = "tg-stamps"
DLQ_REASON = "tg-dlq-reason"
DLQ_STAGE = "tg-dlq-stage"

MAX_STAGE_NAME = 32
_TRACEPARENT_LEN = 55
_U64_MAX = (1 << 64) - 1
_HEX = re.compile(rb"[0-9a-f]*")
_STAGE = re.compile(r"[a-z0-9_-]{1,32}")

Header = Tuple[str, Optional[bytes]]
HeaderValue = Union[bytes, bytearray, memoryview, str, None]


@dataclass
class Incoming:
    """An event's protocol headers as received, and every header it came with."""

    headers: List[Header]
    ingress_ns: int
    error: Optional[str] = None
    trace_id: Optional[str] = None
    span_id: Optional[str] = None
    flags: int = 0
    intended_ns: Optional[int] = None
    stamps: bytes = b""
    _parsed_stamps: List[Tuple[str, int, int]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the protocol headers were all there and well formed."""
        return self.error is None

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def stamp_list(self) -> List[Tuple[str, int, int]]:
        """The stamps so far, oldest first: (stage, ingress_ns, egress_ns)."""
        return list(self._parsed_stamps)


def receive(source: Any, now_ns: Optional[int] = None) -> Incoming:
    """Reads the protocol headers of ``source``: a confluent-kafka ``Message``, an aiokafka
    ``ConsumerRecord``, a Faust event, or the headers themselves (a list of (name, value)
    pairs or a mapping). The stage's ingress time is taken now (or ``now_ns``). Never
    raises on what the headers hold; see ``Incoming.error``."""
    ingress = time.time_ns() if now_ns is None else now_ns
    headers = headers_of(source)
    found = {}
    for name, value in headers:
        if name in (TRACEPARENT, INTENDED, STAMPS):
            found[name] = value  # the last one counts
    inc = Incoming(headers=headers, ingress_ns=ingress)
    inc.error = _check(inc, found)
    return inc


def forward(incoming: Incoming, stage: str, egress_ns: Optional[int] = None) -> List[Tuple[str, bytes]]:
    """The headers to send the stage's output with: every header the event came with,
    except that ``traceparent`` becomes a child span of the same trace (same trace id and
    sampled flag, a new span id) and ``tg-stamps`` gets this stage's stamp
    (``stage:ingress_ns:egress_ns``, egress now or ``egress_ns``) appended.

    An event whose headers were not ``ok`` is passed on unchanged (send it to the dead-
    letter topic with ``dead_letter`` instead). Raises ``ValueError`` only for a stage
    name outside the protocol's 1-32 bytes of ``[a-z0-9_-]``: that is the caller's bug."""
    if not valid_stage_name(stage):
        raise ValueError(f"stage name {stage!r} is not 1-32 of [a-z0-9_-]")
    if not incoming.ok:
        return [(k, v if v is not None else b"") for k, v in incoming.headers]
    egress = time.time_ns() if egress_ns is None else egress_ns
    egress = max(egress, incoming.ingress_ns)
    child = _child_traceparent(incoming)
    stamps = append_stamp(incoming.stamps, stage, incoming.ingress_ns, egress)
    out: List[Tuple[str, bytes]] = []
    for name, value in incoming.headers:
        if name in (TRACEPARENT, STAMPS):
            continue
        out.append((name, value if value is not None else b""))
    out.append((TRACEPARENT, child))
    out.append((STAMPS, stamps))
    return out


def dead_letter(incoming: Incoming, stage: str, reason: Optional[str] = None) -> List[Tuple[str, bytes]]:
    """The headers for the event's copy on the dead-letter topic: everything it came with,
    plus ``tg-dlq-reason`` (``reason``, or why its headers were refused) and
    ``tg-dlq-stage``."""
    why = reason if reason is not None else (incoming.error or "refused by the stage")
    out = [(k, v if v is not None else b"") for k, v in incoming.headers if k not in (DLQ_REASON, DLQ_STAGE)]
    out.append((DLQ_REASON, why.encode("utf-8", "replace")))
    out.append((DLQ_STAGE, stage.encode("utf-8", "replace")))
    return out


def headers_of(source: Any) -> List[Header]:
    """The headers of a confluent-kafka ``Message`` (``headers()``), an aiokafka
    ``ConsumerRecord`` or a Faust event (``headers``: a sequence of pairs or a mapping),
    or of headers given directly, as (name, bytes or None) pairs. Unknown shapes and
    undecodable names give no headers rather than an exception."""
    raw: Any = source
    if hasattr(source, "headers"):
        raw = source.headers
        if callable(raw):
            try:
                raw = raw()
            except Exception:  # a Message of an error event has no headers
                raw = None
    if raw is None:
        return []
    try:
        pairs: Iterable[Any] = raw.items() if hasattr(raw, "items") else raw
        out: List[Header] = []
        for pair in pairs:
            name, value = pair[0], pair[1]
            if isinstance(name, (bytes, bytearray)):
                name = bytes(name).decode("utf-8", "replace")
            if not isinstance(name, str):
                continue
            out.append((name, _as_bytes(value)))
        return out
    except (TypeError, IndexError, KeyError):
        return []


def append_stamp(existing: bytes, stage: str, ingress_ns: int, egress_ns: int) -> bytes:
    """``existing`` (a ``tg-stamps`` value) with ``stage:ingress_ns:egress_ns`` appended."""
    stamp = f"{stage}:{ingress_ns}:{egress_ns}".encode("ascii")
    return existing + b"," + stamp if existing else stamp


def valid_stage_name(name: str) -> bool:
    """Whether ``name`` may stamp: 1-32 bytes of ``[a-z0-9_-]``."""
    return isinstance(name, str) and _STAGE.fullmatch(name) is not None


# --- decoding, rule for rule as probes::headers does it --------------------------------


def _as_bytes(value: HeaderValue) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _missing(header: str) -> str:
    return f"header `{header}` is missing"


def _malformed(header: str, why: str) -> str:
    return f"header `{header}` is malformed: {why}"


def _check(inc: Incoming, found: dict) -> Optional[str]:
    tp = found.get(TRACEPARENT)
    if tp is None:
        return _missing(TRACEPARENT)
    err = _parse_traceparent(inc, tp)
    if err:
        return _malformed(TRACEPARENT, err)
    intended = found.get(INTENDED)
    if intended is None:
        return _missing(INTENDED)
    n = _parse_u64(intended)
    if n is None:
        return _malformed(INTENDED, "not a decimal nanosecond count")
    inc.intended_ns = n
    stamps = found.get(STAMPS) or b""
    err = _parse_stamps(inc, stamps)
    if err:
        return _malformed(STAMPS, err)
    inc.stamps = stamps
    return None


def _hex_ok(b: bytes) -> bool:
    return _HEX.fullmatch(b) is not None


def _parse_traceparent(inc: Incoming, v: bytes) -> Optional[str]:
    if len(v) < _TRACEPARENT_LEN:
        return "shorter than 55 bytes"
    if not _hex_ok(v[0:2]):
        return "version is not hex"
    version = int(v[0:2], 16)
    if version == 0xFF:
        return "version ff is invalid"
    if version == 0 and len(v) != _TRACEPARENT_LEN:
        return "version 00 must be exactly 55 bytes"
    if version != 0 and len(v) > _TRACEPARENT_LEN and v[_TRACEPARENT_LEN] != ord("-"):
        return "trailing data without a `-`"
    if v[2] != ord("-") or v[35] != ord("-") or v[52] != ord("-"):
        return "fields are not separated by `-`"
    trace, span, flags = v[3:35], v[36:52], v[53:55]
    if not _hex_ok(trace):
        return "trace-id is not 32 lowercase hex digits"
    if not _hex_ok(span):
        return "parent-id is not 16 lowercase hex digits"
    if not _hex_ok(flags):
        return "flags are not hex"
    if trace == b"0" * 32:
        return "trace-id is all zeros"
    if span == b"0" * 16:
        return "parent-id is all zeros"
    inc.trace_id, inc.span_id, inc.flags = trace.decode(), span.decode(), int(flags, 16)
    return None


def _parse_u64(b: bytes) -> Optional[int]:
    # bytes.isdigit() is ASCII digits only.
    if not 1 <= len(b) <= 20 or not b.isdigit():
        return None
    n = int(b)
    return n if n <= _U64_MAX else None


def _parse_stamps(inc: Incoming, value: bytes) -> Optional[str]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    parsed = []
    if text:
        for item in text.split(","):
            parts = item.split(":", 2)
            stage = parts[0]
            if not valid_stage_name(stage):
                return "stage name is not 1-32 of [a-z0-9_-]"
            ingress = _parse_u64(parts[1].encode()) if len(parts) > 1 else None
            if ingress is None:
                return "ingress is not a decimal ns count"
            egress = _parse_u64(parts[2].encode()) if len(parts) > 2 else None
            if egress is None:
                return "egress is not a decimal ns count"
            if egress < ingress:
                return "egress before ingress"
            parsed.append((stage, ingress, egress))
    inc._parsed_stamps = parsed
    return None


def _child_traceparent(inc: Incoming) -> bytes:
    while True:
        span = os.urandom(8)
        if span != bytes(8):
            break
    return f"00-{inc.trace_id}-{span.hex()}-{inc.flags:02x}".encode("ascii")
