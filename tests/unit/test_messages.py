"""protocol/messages.py, stream.py and handshake.py: messages on the wire, no sockets."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from sockpool.protocol import (
    PROTOCOL_VERSION,
    ROLE_CLIENT,
    ROLE_WORKER,
    Accepted,
    Ack,
    Control,
    ControlReply,
    Credit,
    Decoder,
    Drain,
    Error,
    FailedJobs,
    Hello,
    Jobs,
    ListFailed,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Release,
    Results,
    Submit,
    Welcome,
    check_hello,
    decode,
    encode,
    error_value,
    frame,
    from_wire,
    pack_body,
)
from sockpool.protocol.messages import E_ROLE, E_VERSION, MAX_RETRIES, check_job, check_result

JOB = [7, "square", [3], {}, False]
CHUNK_JOB = [8, "mod:fn", [1, 2, 3], {"scale": 2.5}, True]
OPTIONS_JOB = [9, "square", [2], {}, False,
               {"timeout": 1.5, "retries": 2, "queue": "gpu", "priority": -3, "delay": 2.5, "at": 1.8e9}]
RESULT = [7, True, 9]
FAILED = [8, False, error_value("ValueError", "boom", "Traceback ...")]

# One instance of every message class, every field set to a non-default value.
FULL: list[Message] = [
    Hello(PROTOCOL_VERSION, ROLE_WORKER, name="w1", session="", tasks=["square", "echo"], processes=4,
          queues=["gpu", "default"]),
    Hello(PROTOCOL_VERSION, ROLE_CLIENT, name="c1", session="abc123"),
    Welcome(PROTOCOL_VERSION, "broker-1", 1 << 20, session="abc123", processes=8, heartbeat_s=2.0, jobs=3),
    Error("bad_message", "what went wrong"),
    Submit(1, [JOB, CHUNK_JOB, OPTIONS_JOB]),
    Accepted(1, 3),
    Jobs([JOB, CHUNK_JOB, OPTIONS_JOB], holders=[JOB[0]], after=[[OPTIONS_JOB[0], JOB[0]]]),
    Results([RESULT, FAILED], credit=5),
    Results([[1, True, {"nested": [None, 1.5, b"\x00bytes", "é"]}]]),
    Credit(3),
    Release([4, 5]),
    Drain(),
    Ack([7, 8]),
    Ack(all=True),
    ListFailed(),
    FailedJobs([["square", [1], {}, error_value("ValueError", "x", "tb"), 3, 1700000000.25]]),
    Ping(),
    Ping(running=[1, 2, 3]),
    Pong(),
    Control("schedule_add", {"name": "n", "cron": "* * * * *", "task": "t"}),
    ControlReply(False, value=[1, "x"], error="why"),
]

# The wire form of each class with only its required fields.
MINIMAL = {
    Hello: {"type": "hello", "version": 1, "role": "client"},
    Welcome: {"type": "welcome", "version": 1, "broker": "b", "max_frame_bytes": 100},
    Error: {"type": "error", "code": "c", "message": "m"},
    Submit: {"type": "submit", "batch": 1, "jobs": []},
    Accepted: {"type": "accepted", "batch": 1, "count": 0},
    Jobs: {"type": "jobs", "jobs": []},
    Results: {"type": "results", "results": []},
    Credit: {"type": "credit", "credit": 1},
    Release: {"type": "release", "ids": []},
    Drain: {"type": "drain"},
    Ack: {"type": "ack"},
    ListFailed: {"type": "list_failed"},
    FailedJobs: {"type": "failed_jobs", "jobs": []},
    Ping: {"type": "ping"},
    Pong: {"type": "pong"},
    Control: {"type": "control", "op": "schedule_list"},
    ControlReply: {"type": "control_reply", "ok": True},
}


def body(wire: object) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


def required_fields(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


# -- round trips -------------------------------------------------------------


def test_every_message_class_is_covered():
    assert {type(m) for m in FULL} == set(MINIMAL)
    assert {cls.type for cls in MINIMAL} == {
        "hello", "welcome", "error", "submit", "accepted", "jobs", "results", "credit",
        "release", "drain", "ack", "list_failed", "failed_jobs", "ping", "pong", "control", "control_reply",
    }


@pytest.mark.parametrize("msg", FULL, ids=lambda m: m.type)
def test_round_trip(msg):
    data = encode(msg)
    assert data[:4] == len(data[4:]).to_bytes(4, "big")
    again = decode(data[4:])
    assert again == msg
    assert type(again) is type(msg)


@pytest.mark.parametrize("msg", FULL, ids=lambda m: m.type)
def test_to_wire_is_a_map_tagged_with_type(msg):
    wire = msg.to_wire()
    assert wire["type"] == msg.type
    assert set(wire) == {"type"} | {f.name for f in dataclasses.fields(msg)}
    assert from_wire(wire) == msg
    assert encode(msg) == frame(pack_body(wire))


def test_round_trip_through_the_stream_decoder_byte_by_byte():
    data = b"".join(encode(m) for m in FULL)
    dec = Decoder()
    got = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        while (m := dec.next_message()) is not None:
            got.append(m)
    dec.feed(b"")
    assert dec.next_message() is None
    assert dec.at_eof
    assert got == FULL


def test_stream_decoder_with_trailing_partial_frame():
    data = encode(Ping()) + encode(Credit(2))
    dec = Decoder()
    dec.feed(data + encode(Pong())[:-1])
    assert dec.next_message() == Ping()
    assert dec.next_message() == Credit(2)
    assert dec.next_message() is None
    dec.feed(b"")
    with pytest.raises(ProtocolError, match="truncated frame"):
        dec.next_message()


def test_stream_decoder_rejects_oversized_prefix_before_body():
    dec = Decoder(max_frame_bytes=64)
    dec.feed((65).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        dec.next_message()


def test_stream_decoder_validates_messages():
    dec = Decoder()
    dec.feed(frame(body({"type": "credit", "credit": "many"})))
    with pytest.raises(ProtocolError, match="credit"):
        dec.next_message()


# -- compatibility -----------------------------------------------------------


@pytest.mark.parametrize("cls", list(MINIMAL), ids=lambda c: c.type)
def test_optional_fields_default_when_absent(cls):
    """An older peer that never heard of the optional fields still decodes."""
    msg = decode(body(MINIMAL[cls]))
    assert type(msg) is cls
    for f in dataclasses.fields(cls):
        if f.name not in MINIMAL[cls]:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert getattr(msg, f.name) == default


def test_older_hello_defaults():
    msg = decode(body({"type": "hello", "version": 1, "role": "worker"}))
    assert msg == Hello(1, "worker", name="", session="", tasks=[], processes=0)
    assert decode(body({"type": "results", "results": [RESULT]})).credit == 0
    welcome = decode(body(MINIMAL[Welcome]))
    assert (welcome.session, welcome.processes, welcome.heartbeat_s, welcome.jobs) == ("", 0, 0.0, 0)
    assert decode(body({"type": "ping"})) == Ping(running=[])
    assert decode(body({"type": "ack"})) == Ack(ids=[], all=False)


@pytest.mark.parametrize("msg", FULL, ids=lambda m: m.type)
def test_unknown_extra_keys_are_ignored(msg):
    """A newer peer may add fields."""
    wire = msg.to_wire() | {"auth": {"token": "x"}, "zz_future": [1, 2, 3], "x": None}
    assert decode(body(wire)) == msg


def test_key_order_does_not_matter():
    wire = {"credit": 2, "results": [RESULT], "type": "results"}
    assert decode(body(wire)) == Results([RESULT], credit=2)


# -- malformed bodies ----------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x81\xa4type", b"\x80\x80", b"\xa2\xc3\x28"])
def test_invalid_msgpack(raw):
    with pytest.raises(ProtocolError, match="invalid msgpack"):
        decode(raw)


def test_trailing_garbage_inside_a_body_is_invalid():
    with pytest.raises(ProtocolError):
        decode(body({"type": "ping"}) + b"\x00")


@pytest.mark.parametrize("wire", [None, 1, "ping", ["type", "ping"], b"ping", 1.5, True])
def test_body_must_be_a_map(wire):
    with pytest.raises(ProtocolError, match="must be a map"):
        decode(body(wire))


@pytest.mark.parametrize(
    "wire",
    [
        {},
        {"version": 1, "role": "client"},
        {"type": "nope"},
        {"type": "Hello", "version": 1, "role": "client"},
        {"type": ""},
        {"type": None},
        {"type": 1},
        {"type": ["ping"]},
        {"type": b"ping"},
        {b"type": "ping"},
        {"type": "Message"},
    ],
)
def test_unknown_or_missing_type(wire):
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(body(wire))


@pytest.mark.parametrize(
    "cls,name",
    [(cls, name) for cls in MINIMAL for name in required_fields(cls)],
    ids=lambda x: getattr(x, "type", x),
)
def test_missing_required_field(cls, name):
    wire = dict(MINIMAL[cls])
    del wire[name]
    with pytest.raises(ProtocolError, match=f"missing field '{name}'"):
        decode(body(wire))


WRONG_TYPES = [
    # (message type, field, bad value)
    ("hello", "version", "1"),
    ("hello", "version", 1.0),
    ("hello", "version", True),
    ("hello", "version", None),
    ("hello", "role", 1),
    ("hello", "role", b"client"),
    ("hello", "name", None),
    ("hello", "session", 5),
    ("hello", "tasks", "square"),
    ("hello", "tasks", {"square": 1}),
    ("hello", "processes", False),
    ("hello", "processes", 2.0),
    ("welcome", "max_frame_bytes", True),
    ("welcome", "broker", None),
    ("welcome", "processes", "4"),
    ("error", "code", 400),
    ("error", "message", None),
    ("submit", "batch", True),
    ("submit", "batch", "1"),
    ("submit", "jobs", {}),
    ("submit", "jobs", None),
    ("accepted", "count", False),
    ("accepted", "batch", 1.0),
    ("jobs", "jobs", "x"),
    ("jobs", "after", {}),
    ("results", "results", {}),
    ("results", "credit", True),
    ("results", "credit", 1.5),
    ("credit", "credit", True),
    ("credit", "credit", "3"),
    ("credit", "credit", None),
    ("welcome", "heartbeat_s", "2"),
    ("welcome", "heartbeat_s", None),
    ("welcome", "jobs", True),
    ("release", "ids", 1),
    ("release", "ids", {}),
    ("ack", "ids", "1"),
    ("ack", "all", 1),
    ("ack", "all", None),
    ("failed_jobs", "jobs", {}),
    ("ping", "running", 1),
    ("ping", "running", {"a": 1}),
]


@pytest.mark.parametrize("tag,name,value", WRONG_TYPES)
def test_wrong_field_type(tag, name, value):
    cls = next(c for c in MINIMAL if c.type == tag)
    wire = dict(MINIMAL[cls]) | {name: value}
    with pytest.raises(ProtocolError, match=f"field '{name}' must be"):
        decode(body(wire))


@pytest.mark.parametrize("field, value", [
    ("holders", ["1"]), ("holders", [True]), ("after", [[1]]), ("after", [[1, "2"]]), ("after", [5]),
])
def test_a_succession_in_jobs_must_be_ids_and_pairs_of_ids(field, value):
    with pytest.raises(ProtocolError, match=f"jobs: {field} must be"):
        decode(body({"type": "jobs", "jobs": [], field: value}))


@pytest.mark.parametrize("tasks", [[1], ["ok", None], [["square"]], [b"square"]])
def test_hello_tasks_must_be_strings(tasks):
    with pytest.raises(ProtocolError, match="tasks must be strings"):
        decode(body({"type": "hello", "version": 1, "role": "worker", "tasks": tasks}))


def test_integer_ranges_are_checked_at_the_boundary():
    """Ranges are the decoder's business too (see protocol/limits.py)."""
    assert decode(body({"type": "credit", "credit": 5})) == Credit(5)
    with pytest.raises(ProtocolError, match="out of range"):
        decode(body({"type": "credit", "credit": -1}))


BAD_JOBS = [
    None,
    7,
    "job",
    {"id": 1},
    [],
    [1, "t", [], {}],  # too short
    [1, "t", [], {}, False, {}, "extra"],  # too long
    [1, "t", [], {}, False, "extra"],  # options must be a map
    [1, "t", [], {}, False, None],
    [1, "t", [], {}, False, []],
    [True, "t", [], {}, False],  # bool id
    [1.0, "t", [], {}, False],
    ["1", "t", [], {}, False],
    [1, None, [], {}, False],
    [1, b"t", [], {}, False],
    [1, "t", (), {}, False][:2] + [None, {}, False],  # args None
    [1, "t", {}, {}, False],  # args not a list
    [1, "t", "a", {}, False],
    [1, "t", [], [], False],  # kwargs not a map
    [1, "t", [], None, False],
    [1, "t", [], {}, 0],  # many must be a bool
    [1, "t", [], {}, None],
    [1, "t", [], {}, "true"],
]


@pytest.mark.parametrize("entry", BAD_JOBS)
@pytest.mark.parametrize("tag", ["submit", "jobs"])
def test_malformed_job_entry(tag, entry):
    wire = {"type": tag, "jobs": [JOB, entry]}
    if tag == "submit":
        wire["batch"] = 1
    with pytest.raises(ProtocolError, match="malformed job entry"):
        decode(body(wire))
    with pytest.raises(ProtocolError):
        check_job(entry)


BAD_RESULTS = [
    None,
    7,
    [],
    [1, True],  # too short
    [1, True, 2, 3],  # too long
    [True, True, 1],  # bool id
    [1.0, True, 1],
    ["1", True, 1],
    [1, 1, 1],  # ok must be a bool
    [1, None, 1],
    [1, "yes", 1],
    {"id": 1, "ok": True, "value": 1},
]


@pytest.mark.parametrize("entry", BAD_RESULTS)
def test_malformed_result_entry(entry):
    with pytest.raises(ProtocolError, match="malformed result entry"):
        decode(body({"type": "results", "results": [RESULT, entry]}))
    with pytest.raises(ProtocolError):
        check_result(entry)


@pytest.mark.parametrize("value", [None, 1, "x", [1, [2]], {"a": {"b": b"c"}}, 1.5, b"raw", -(2**63)])
def test_result_value_may_be_anything(value):
    msg = Results([[1, True, value], [2, False, {"type": "E", "message": "m", "detail": value}]])
    assert decode(encode(msg)[4:]) == msg


@pytest.mark.parametrize("tag", ["release", "ack", "ping"])
@pytest.mark.parametrize("bad", [True, 1.0, "1", None, [1]], ids=repr)
def test_id_lists_hold_only_integers(tag, bad):
    name = "running" if tag == "ping" else "ids"
    with pytest.raises(ProtocolError, match="must be integers"):
        decode(body({"type": tag, name: [1, bad]}))


GOOD_OPTIONS = [
    {},
    {"timeout": 1},
    {"timeout": 0.001},
    {"timeout": None},
    {"retries": 0},
    {"retries": MAX_RETRIES},
    {"timeout": 30, "retries": 3},
    {"some_future_option": [1, 2]},
]


@pytest.mark.parametrize("options", GOOD_OPTIONS, ids=repr)
def test_job_options(options):
    entry = [1, "square", [2], {}, False, options]
    check_job(entry)
    assert decode(body({"type": "jobs", "jobs": [entry]})) == Jobs([entry])


BAD_OPTIONS = [
    {"timeout": 0},
    {"timeout": -1},
    {"timeout": 0.0},
    {"timeout": True},
    {"timeout": "1"},
    {"timeout": float("nan")},
    {"timeout": [1]},
    {"retries": -1},
    {"retries": MAX_RETRIES + 1},
    {"retries": True},
    {"retries": 1.0},
    {"retries": "2"},
    {"retries": None},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=repr)
@pytest.mark.parametrize("tag", ["submit", "jobs"])
def test_bad_job_options(tag, options):
    wire = {"type": tag, "batch": 1, "jobs": [JOB, [1, "square", [2], {}, False, options]]}
    with pytest.raises(ProtocolError, match="malformed job entry"):
        decode(body(wire))


def test_well_formed_entries_pass():
    check_job(JOB)
    check_job(CHUNK_JOB)
    check_job(OPTIONS_JOB)
    check_result(RESULT)
    check_result(FAILED)


def test_error_value_layout():
    assert error_value("ValueError", "boom") == {"type": "ValueError", "message": "boom", "traceback": ""}
    assert error_value("E", "m", "tb") == {"type": "E", "message": "m", "traceback": "tb"}


@pytest.mark.parametrize("depth", [1100, 5000])
def test_deeply_nested_value_is_a_protocol_error(depth):
    # {"type": "results", "results": [[1, true, [[[...nil...]]]]]}, deeper than
    # msgpack's own stack limit: refused by the unpacker.
    head = b"\x82" + body("type") + body("results") + body("results") + b"\x91\x93\x01\xc3"
    with pytest.raises(ProtocolError, match="invalid msgpack"):
        decode(head + b"\x91" * depth + b"\xc0")


@pytest.mark.parametrize("tag", ["submit", "results"])
def test_malformed_deeply_nested_entry_is_a_protocol_error(tag):
    # Within msgpack's nesting limit, but deep enough that repr() of it would
    # recurse past Python's limit; the error must still be a ProtocolError.
    nested = msgpack.unpackb(b"\x91" * 1020 + b"\xc0")
    wire = {"type": tag, "batch": 1, "jobs": [nested]} if tag == "submit" else {"type": tag, "results": [nested]}
    with pytest.raises(ProtocolError):
        decode(body(wire))


# -- handshake -----------------------------------------------------------------


def test_check_hello_accepts_clients_and_workers():
    assert check_hello(Hello(PROTOCOL_VERSION, ROLE_CLIENT)) is None
    assert check_hello(Hello(PROTOCOL_VERSION, ROLE_CLIENT, session="s")) is None
    assert check_hello(Hello(PROTOCOL_VERSION, ROLE_WORKER, tasks=["square"], processes=1)) is None


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, -1])
def test_check_hello_refuses_other_versions(version):
    refusal = check_hello(Hello(version, ROLE_CLIENT))
    assert isinstance(refusal, Error)
    assert refusal.code == E_VERSION == "version_mismatch"
    assert str(version) in refusal.message


@pytest.mark.parametrize("role", ["", "admin", "Client", "WORKER"])
def test_check_hello_refuses_unknown_roles(role):
    refusal = check_hello(Hello(PROTOCOL_VERSION, role))
    assert isinstance(refusal, Error)
    assert refusal.code == E_ROLE == "bad_role"


@pytest.mark.parametrize("processes", [0, -3])
def test_check_hello_refuses_a_worker_without_processes(processes):
    refusal = check_hello(Hello(PROTOCOL_VERSION, ROLE_WORKER, tasks=["square"], processes=processes))
    assert isinstance(refusal, Error)
    assert refusal.code == "bad_role"


def test_version_is_checked_before_role():
    refusal = check_hello(Hello(PROTOCOL_VERSION + 1, "admin"))
    assert refusal is not None and refusal.code == "version_mismatch"


# -- queue, priority and delay options (issue #13) ------------------------------


@pytest.mark.parametrize("options", [
    {"queue": ""}, {"queue": "x" * 65}, {"queue": "gpu queue"}, {"queue": "gpü"}, {"queue": 3},
    {"priority": 1001}, {"priority": -1001}, {"priority": 1.5}, {"priority": True},
    {"delay": -1}, {"delay": float("nan")}, {"delay": float("inf")}, {"delay": "30s"},
    {"at": float("inf")}, {"at": float("nan")}, {"at": "2026-12-24T18:00:00Z"},
])
def test_bad_queue_priority_and_delay_options_are_refused(options):
    with pytest.raises(ProtocolError):
        check_job([1, "square", [1], {}, False, options])


@pytest.mark.parametrize("options", [
    {"queue": "gpu"}, {"queue": "a" * 64}, {"queue": "team.x:gpu-1_a"}, {"priority": 1000}, {"priority": -1000},
    {"delay": 0}, {"delay": 30 * 86400.0}, {"at": 0}, {"at": 4102444800.0},
])
def test_good_queue_priority_and_delay_options_pass(options):
    check_job([1, "square", [1], {}, False, options])


@pytest.mark.parametrize("queues", [[""], ["a b"], ["x" * 65], [f"q{i}" for i in range(65)], [3]])
def test_a_worker_hello_with_bad_queues_is_refused(queues):
    with pytest.raises(ProtocolError):
        decode(encode(Hello(PROTOCOL_VERSION, ROLE_WORKER, tasks=["t"], processes=1, queues=queues))[4:])
