"""The shared test vectors (clients/protocol-vectors.json), which the Rust codec's tests
(probes/tests/vectors.rs) read too: the two implementations cannot drift."""

import json
import pathlib

import pytest

import tailgate_probe as tp

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[2] / "protocol-vectors.json").read_text())


def value(v):
    if v is None:
        return None
    if isinstance(v, dict):
        return bytes.fromhex(v["hex"])
    return v.encode()


@pytest.mark.parametrize("case", VECTORS["receive"], ids=lambda c: c["name"])
def test_every_receive_vector_decodes_as_written(case):
    headers = [(k, value(v)) for k, v in case["headers"]]
    inc = tp.receive(headers, now_ns=1)
    if "ok" in case:
        ok = case["ok"]
        assert inc.error is None, inc.error
        assert (inc.trace_id, inc.span_id, inc.flags) == (ok["trace_id"], ok["span_id"], ok["flags"])
        assert inc.intended_ns == ok["intended_ns"]
        assert [list(s) for s in inc.stamp_list()] == ok["stamps"]
    else:
        assert inc.error == case["error"]
        assert not inc.ok


@pytest.mark.parametrize("case", VECTORS["append"], ids=lambda c: c["value"])
def test_appending_a_stamp_writes_what_the_vectors_say(case):
    got = tp.append_stamp(case["existing"].encode(), case["stage"], case["ingress_ns"], case["egress_ns"])
    assert got.decode() == case["value"]


def test_stage_names_are_valid_as_the_vectors_say():
    assert all(tp.valid_stage_name(n) for n in VECTORS["stage_names"]["valid"])
    assert not any(tp.valid_stage_name(n) for n in VECTORS["stage_names"]["invalid"])


def test_there_are_enough_vectors_to_mean_something():
    assert len(VECTORS["receive"]) >= 30
    assert sum("error" in c for c in VECTORS["receive"]) >= 20
