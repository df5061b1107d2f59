"""broker/admission.py through BrokerState: a job or result the broker could
not pass on costs only itself, never a worker or another client's jobs."""

from __future__ import annotations

import struct

from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Accepted, Credit, Hello, Jobs, Results, Submit
from sockpool.protocol.limits import MAX_NESTING

MAX = 64 * 1024
C1, C2, W1 = 11, 12, 21


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def setup() -> BrokerState:
    state = BrokerState("b1", MAX)
    state.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="attacker"), "h:1", 0.0)
    state.on_hello(C2, Hello(PROTOCOL_VERSION, "client", session="victim"), "h:2", 0.0)
    state.on_hello(W1, Hello(PROTOCOL_VERSION, "worker", tasks=["echo"], processes=1), "h:w", 0.0)
    return state


def results_for(out: list, conn: int) -> dict[int, list]:
    return {e[0]: e for c, m in out if c == conn and isinstance(m, Results) for e in m.results}


def test_a_job_that_would_outgrow_a_workers_frame_is_refused_alone_at_submit():
    state = setup()
    # 40 KiB of float32 on the wire (what a numpy client sends) becomes
    # 72 KiB of float64 on the way to a worker: over the 64 KiB limit.
    floats = [struct.unpack(">f", struct.pack(">f", 0.5))[0]] * 8000
    frame_bytes = 5 * 8000 + 100
    out = state.on_message(C1, Submit(1, [[1, "echo", floats, {}, False], [2, "echo", [1], {}, False]]), 1.0, frame_bytes)
    assert (C1, Accepted(1, 1)) in out
    refused = results_for(out, C1)
    assert refused[1][1] is False and refused[1][2]["type"] == "ArgumentsTooLarge"
    assert "float64" in refused[1][2]["message"]
    assert 2 not in refused
    assert [e[0] for c, m in out if isinstance(m, Jobs) for e in m.jobs] == []  # no credit yet
    out = state.on_message(W1, Credit(5), 1.0)
    [(to, jobs)] = [(c, m) for c, m in out if isinstance(m, Jobs)]
    assert to == W1 and len(jobs.jobs) == 1 and jobs.jobs[0][2] == [1]


def test_a_small_frame_is_never_re_encoded_to_check_its_size():
    state = setup()
    floats = [0.5] * 8000  # as if they had come in a small frame: trusted
    out = state.on_message(C1, Submit(1, [[1, "echo", floats, {}, False]]), 1.0, frame_bytes=100)
    assert (C1, Accepted(1, 1)) in out


def test_arguments_nested_past_the_bound_are_refused_alone():
    state = setup()
    jobs = [[1, "echo", [nested(MAX_NESTING)], {}, False], [2, "echo", [1], {"k": nested(MAX_NESTING)}, False],
            [3, "echo", [nested(MAX_NESTING - 1)], {}, False]]
    out = state.on_message(C1, Submit(1, jobs), 1.0, 700)
    assert (C1, Accepted(1, 1)) in out
    refused = results_for(out, C1)
    assert refused.keys() == {1, 2}
    assert {e[2]["type"] for e in refused.values()} == {"ArgumentsTooDeep"}


def test_a_job_that_cannot_be_sent_fails_alone_and_the_worker_keeps_its_credit():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "echo", ["big"], {}, False]]), 1.0)
    state.on_message(C2, Submit(1, [[7, "echo", ["small"], {}, False]]), 1.0)
    out = state.on_message(W1, Credit(2), 1.0)
    [jobs] = [m for c, m in out if isinstance(m, Jobs)]
    big_gid = next(e[0] for e in jobs.jobs if e[2] == ["big"])
    out = state.on_unsendable(W1, [big_gid], 2.0)
    failed = results_for(out, C1)
    assert failed[1][2]["type"] == "ArgumentsTooLarge"
    assert state.workers[W1].credit == 1 and set(state.workers[W1].leased) == {big_gid + 1}
    # The victim's job is still leased and completes normally.
    out = state.on_message(W1, Results([[big_gid + 1, True, "done"]]), 3.0)
    assert results_for(out, C2)[7] == [7, True, "done"]


def test_a_result_nested_past_the_bound_fails_that_job_only():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "echo", [1], {}, False], [2, "echo", [2], {}, False]]), 1.0)
    out = state.on_message(W1, Credit(2), 1.0)
    [jobs] = [m for c, m in out if isinstance(m, Jobs)]
    g1, g2 = (e[0] for e in jobs.jobs)
    out = state.on_message(W1, Results([[g1, True, nested(MAX_NESTING + 1)], [g2, True, 2]]), 2.0)
    got = results_for(out, C1)
    assert got[1][1] is False and got[1][2]["type"] == "ResultTooDeep"
    assert got[2] == [2, True, 2]


def test_an_error_message_of_a_megabyte_is_cut():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "echo", [1], {}, False]]), 1.0)
    [jobs] = [m for c, m in state.on_message(W1, Credit(1), 1.0) if isinstance(m, Jobs)]
    error = {"type": "ValueError", "message": "m" * 1_000_000, "traceback": "t" * 1_000_000}
    out = state.on_message(W1, Results([[jobs.jobs[0][0], False, error]]), 2.0)
    value = results_for(out, C1)[1][2]
    assert value["type"] == "ValueError"
    assert len(value["message"]) <= 4000 and len(value["traceback"]) <= 16_000


# -- failed jobs: scoped to the caller's session, bounded, paged ------------------


def fail(state: BrokerState, conn: int, cid: int, args: list, now: float) -> None:
    state.on_message(conn, Submit(cid, [[cid, "echo", args, {}, False]]), now)
    [jobs] = [m for c, m in state.on_message(W1, Credit(1), now) if isinstance(m, Jobs)]
    state.on_message(W1, Results([[jobs.jobs[0][0], False, {"type": "ValueError", "message": "no"}]]), now)


def test_a_client_lists_only_its_own_sessions_failed_jobs_and_the_operator_all():
    from sockpool.protocol import FailedJobs, ListFailed

    state = setup()
    fail(state, C2, 1, ["victim-api-key"], 1.0)
    fail(state, C1, 2, ["attacker-own"], 2.0)
    [(_, mine)] = state.on_message(C1, ListFailed(), 3.0)
    assert isinstance(mine, FailedJobs) and [row[1] for row in mine.jobs] == [["attacker-own"]]
    state.on_hello(31, Hello(PROTOCOL_VERSION, "operator", name="ops"), "h:o", 3.0)
    assert state.is_operator(31) and not state.is_operator(C1)
    [(_, everything)] = state.on_message(31, ListFailed(), 3.0)
    assert [row[1] for row in everything.jobs] == [["victim-api-key"], ["attacker-own"]]
    state.on_disconnect(31, 4.0)
    assert not state.is_operator(31)


def test_failed_records_are_bounded_and_pages_fit_a_frame():
    from sockpool.protocol import ListFailed, encode

    state = setup()
    for cid in range(1, 9):
        fail(state, C1, cid, ["x" * 10_000], float(cid))  # kept: 8 of them outgrow a 64 KiB frame
    fail(state, C1, 9, ["x" * 60_000], 9.0)  # not kept: one alone would nearly fill a frame
    pages, offset = [], 0
    while True:
        [(_, page)] = state.on_message(C1, ListFailed(offset=offset), 10.0)
        assert len(encode(page)) - 4 <= MAX
        pages.append(page)
        offset += len(page.jobs)
        if not page.more:
            break
    assert offset == 9 and len(pages) > 1
    rows = [row for page in pages for row in page.jobs]
    assert [row[1] for row in rows[:8]] == [["x" * 10_000]] * 8
    assert "not kept" in rows[8][1][0]


def test_a_status_reply_always_fits_a_frame_whatever_the_names():
    from sockpool.protocol import StatusRequest, encode
    from sockpool.protocol.limits import MAX_TASK_NAME_CHARS

    for frame_limit in (MAX, 8192):
        state = setup()
        state.max_frame_bytes = frame_limit
        for i in range(40):
            name = f"{i:03d}" + "é" * (MAX_TASK_NAME_CHARS - 3)  # the longest names, 2 bytes a character
            state.on_message(C2, Submit(i + 1, [[i + 1, name, [1], {}, False]]), 1.0)  # nobody serves it
        [(_, waiting)] = state.on_message(C1, StatusRequest(), 2.0)  # listed as waiting for a worker
        assert len(encode(waiting)) - 4 <= frame_limit
        state.tick(11.0)  # past the grace: all 40 fail as UnknownTask
        [(_, reply)] = state.on_message(C1, StatusRequest(), 12.0)
        assert len(encode(reply)) - 4 <= frame_limit
        assert reply.status["totals"]["failed"] == 40
    assert waiting.status["truncated"] == ["unserved", "tasks"]  # cut at 8 KiB, and says so
    assert reply.status["truncated"] == ["recent_failures", "tasks"]


def test_failure_messages_in_status_are_shown_to_their_own_session_and_the_operator_only():
    from sockpool.protocol import StatusRequest

    state = setup()
    fail(state, C2, 1, ["x"], 1.0)  # ValueError "no", the victim's
    [(_, mine)] = state.on_message(C2, StatusRequest(), 2.0)
    [(_, theirs)] = state.on_message(C1, StatusRequest(), 2.0)
    assert mine.status["recent_failures"][0]["message"] == "no"
    assert "message" not in theirs.status["recent_failures"][0]
    assert theirs.status["recent_failures"][0]["type"] == "ValueError"
    assert "session" not in mine.status["recent_failures"][0]  # never shown: a capability
    assert "message" not in state.status(2.0, viewer=None)["recent_failures"][0]  # the HTTP port's view


def test_a_large_frames_long_argument_lists_are_kept_packed():
    from sockpool.protocol.packed import PACKED_ARRAY, unpack_array

    state = setup()
    args = [{}] * 30_000  # 30 KB on the wire, 2 MB as Python dicts
    small = [1, 2]
    state.on_message(C1, Submit(1, [[1, "echo", args, {}, False], [2, "echo", small, {}, False]]), 1.0, 66_000)
    kept = {job.cid: job.args for job in state.jobs.values()}
    assert getattr(kept[1], "code", None) == PACKED_ARRAY and unpack_array(kept[1]) == args
    assert kept[2] == [1, 2]  # short lists stay as they are
    [jobs] = [m for c, m in state.on_message(W1, Credit(2), 1.0) if isinstance(m, Jobs)]
    assert [e[2] for e in jobs.jobs][1] == [1, 2]


def test_failed_rows_an_older_broker_stored_are_bounded_on_restore():
    from sockpool.broker.records import FailedJob
    from sockpool.protocol import ListFailed, encode

    state = setup()
    huge = FailedJob(1, "echo", ["x" * 9_000_000], {}, {"type": "E", "message": "m"}, 1, 1.0, "", 9_000_000)
    state.restore([], [], [huge, huge], 2.0)
    state.on_hello(31, Hello(PROTOCOL_VERSION, "operator"), "h:o", 2.0)
    [(_, page)] = state.on_message(31, ListFailed(), 3.0)
    assert len(page.jobs) == 2 and len(encode(page)) - 4 <= MAX
    assert "not kept" in page.jobs[0][1][0]


def test_a_non_finite_float_is_a_protocol_error():
    import msgpack
    import pytest

    from sockpool.protocol import ProtocolError, decode

    with pytest.raises(ProtocolError, match="finite"):
        decode(msgpack.packb({"type": "welcome", "version": 1, "broker": "b", "max_frame_bytes": 1024,
                              "heartbeat_s": float("nan")}))


def test_a_large_frames_long_keyword_values_are_kept_packed():
    import msgpack

    from sockpool.protocol.exttypes import PACKED_VALUE
    from sockpool.protocol.values import from_wire_kwargs

    state = setup()
    kwargs = {"rows": [{}] * 30_000, "n": 3, "short": [1, 2]}
    state.on_message(C1, Submit(1, [[1, "echo", [], kwargs, False]]), 1.0, 66_000)
    [job] = state.jobs.values()
    assert isinstance(job.kwargs["rows"], msgpack.ExtType) and job.kwargs["rows"].code == PACKED_VALUE
    assert job.kwargs["n"] == 3 and job.kwargs["short"] == [1, 2]
    assert from_wire_kwargs(job.kwargs) == kwargs  # what the pool process gets


def test_a_short_list_holding_a_long_one_is_packed_too():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "echo", [[{}] * 30_000], {"k": [[1] * 20]}, False]]), 1.0, 66_000)
    [job] = state.jobs.values()
    assert getattr(job.args, "code", None) == 1 and getattr(job.kwargs["k"], "code", None) == 4
