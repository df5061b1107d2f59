"""The protocol boundary's bounds (protocol/limits.py): every integer that
reaches the store or a fixed-width field, every name the broker keeps,
every field of what a worker reports."""

from __future__ import annotations

import msgpack
import pytest

from sockpool.protocol import ProtocolError, decode
from sockpool.protocol.limits import (
    MAX_NESTING,
    MAX_PROCESSES,
    MAX_SESSION_CHARS,
    MAX_TASK_NAME_CHARS,
    bad_error_value,
    container_items,
    cut,
    too_deep,
)
from sockpool.protocol.packed import PACKED_ARRAY, array_length, is_array


def body(wire: object) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


def submit(*jobs: list) -> bytes:
    return body({"type": "submit", "batch": 1, "jobs": list(jobs)})


def test_a_job_id_sqlite_cannot_store_is_a_protocol_error():
    assert decode(submit([2**63 - 1, "t", [], {}, False]))
    assert decode(submit([-(2**63), "t", [], {}, False]))
    for cid in (2**63, 2**64 - 1):
        with pytest.raises(ProtocolError, match="malformed job entry"):
            decode(submit([cid, "t", [], {}, False]))


@pytest.mark.parametrize("wire", [
    {"type": "submit", "batch": 2**63, "jobs": []},
    {"type": "accepted", "batch": 2**64 - 1, "count": 1},
    {"type": "ack", "ids": [1, 2**63]},
    {"type": "release", "ids": [2**64 - 1]},
    {"type": "ping", "running": [2**63]},
    {"type": "results", "results": [[2**63, True, None]]},
    {"type": "hello", "version": 2**64 - 1, "role": "client"},
])
def test_every_wire_integer_fits_64_signed_bits(wire):
    with pytest.raises(ProtocolError):
        decode(body(wire))


@pytest.mark.parametrize("wire", [
    {"type": "hello", "version": 1, "role": "worker", "tasks": ["t"], "processes": 2**64 - 2},
    {"type": "hello", "version": 1, "role": "worker", "tasks": ["t"], "processes": MAX_PROCESSES + 1},
    {"type": "credit", "credit": 2**62},
    {"type": "credit", "credit": -1},
    {"type": "results", "results": [], "credit": 2**40},
])
def test_announced_numbers_are_bounded(wire):
    with pytest.raises(ProtocolError, match="out of range"):
        decode(body(wire))


def test_names_and_ids_the_broker_keeps_are_bounded():
    decode(body({"type": "hello", "version": 1, "role": "client", "session": "s" * MAX_SESSION_CHARS}))
    with pytest.raises(ProtocolError, match="session"):
        decode(body({"type": "hello", "version": 1, "role": "client", "session": "s" * (MAX_SESSION_CHARS + 1)}))
    with pytest.raises(ProtocolError, match="name"):
        decode(body({"type": "hello", "version": 1, "role": "client", "name": "n" * 100_000}))
    with pytest.raises(ProtocolError, match="tasks"):
        decode(body({"type": "hello", "version": 1, "role": "worker", "processes": 1,
                     "tasks": ["t" * (MAX_TASK_NAME_CHARS + 1)]}))
    with pytest.raises(ProtocolError, match="malformed job entry"):
        decode(submit([1, "t" * (MAX_TASK_NAME_CHARS + 1), [], {}, False]))


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e300, 0, -1])
def test_a_job_timeout_is_a_finite_positive_number(timeout):
    with pytest.raises(ProtocolError):
        decode(submit([1, "t", [], {}, False, {"timeout": timeout}]))


@pytest.mark.parametrize("error", [
    {"type": [1], "message": "m"},
    {"type": "E", "message": 7},
    {"type": "E", "traceback": b"tb"},
    {"type": "E", "items": "not a list"},
    "just a string",
    None,
])
def test_a_workers_failed_result_must_be_a_well_formed_error(error):
    assert bad_error_value(error) is not None
    with pytest.raises(ProtocolError, match="malformed result entry"):
        decode(body({"type": "results", "results": [[1, False, error]]}))


def test_well_formed_errors_pass():
    assert bad_error_value({"type": "ValueError", "message": "m", "traceback": "tb", "items": []}) is None
    assert decode(body({"type": "results", "results": [[1, False, {"type": "E"}], [2, True, [1]]]}))


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_bounded_by_us():
    assert not too_deep(nested(MAX_NESTING))
    assert too_deep(nested(MAX_NESTING + 1))
    assert too_deep({"k": nested(MAX_NESTING)})
    assert not too_deep([1.5] * 100_000)
    # A packed array is opaque: only the pool process ever unpacks it.
    assert not too_deep([msgpack.ExtType(PACKED_ARRAY, b"\x91" * 600 + b"\xc0")])


def test_container_items_are_a_list_itself_and_a_map_s_values():
    values = [1, [2]]
    assert container_items(values) is values
    assert list(container_items({"a": 1, "b": [2]}) or ()) == [1, [2]]
    assert list(container_items([]) or "x") == ["x"]  # empty, but a container
    assert container_items({}) is not None
    # Scalars, bytes, tuples (never decoded by msgpack) and packed values are not walked.
    for leaf in (1, "s", b"b", (1, 2), None, msgpack.ExtType(PACKED_ARRAY, b"\x90")):
        assert container_items(leaf) is None


def test_a_packed_array_header_cannot_claim_more_items_than_bytes():
    assert array_length(msgpack.ExtType(PACKED_ARRAY, msgpack.packb([1, 2, 3]))) == 3
    # 5 bytes claiming 4 billion items count as the 0 they hold.
    assert array_length(msgpack.ExtType(PACKED_ARRAY, b"\xdd\xff\xff\xff\xff")) == 0
    assert array_length(msgpack.ExtType(PACKED_ARRAY, b"\x93\x01")) == 1
    assert is_array(msgpack.ExtType(PACKED_ARRAY, b"\x93\x01"))  # the job fails alone, in the pool


def test_cut_says_what_it_cut():
    assert cut("short", 100) == "short"
    long = cut("x" * 10_000, 100)
    assert len(long) <= 100 + 40 and "characters cut" in long


def test_peer_text_is_logged_with_its_control_characters_escaped():
    from sockpool.protocol.limits import loggable

    forged = loggable("w1\n2026-12-01 10:00:00 INFO broker: worker admin joined\x1b[2J")
    assert "\n" not in forged and "\x1b" not in forged
    assert forged.startswith("w1\\x0a2026")
    assert len(loggable("x" * 10_000)) <= 240


def test_a_job_too_large_for_the_receivers_frames_is_handed_back_not_raised():
    from sockpool.protocol import Jobs, Results
    from sockpool.protocol.messages import encode_to_fit

    small, huge = [1, "t", [1], {}, False], [2, "t", ["x" * 5000], {}, False]
    frames, unsent = encode_to_fit(Jobs([small, huge, [3, "t", [3], {}, False]]), 2048)
    assert unsent == [huge]
    assert [e[0] for f in frames for e in decode(f[4:]).jobs] == [1, 3]
    frames, unsent = encode_to_fit(Results([[7, True, "x" * 5000]], credit=2), 2048)
    [reply] = [decode(f[4:]) for f in frames]
    assert unsent == [] and reply.results[0][2]["type"] == "ResultTooLarge" and reply.credit == 2
