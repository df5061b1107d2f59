"""broker/control.py and the state's hooks: cancel, stop, unique keys, retry.

Transcripts against the pure core, every call with an explicit `now`.
Connection ids: clients 1x, workers 2x.
"""

from __future__ import annotations

from sockpool.broker.state import BrokerState
from sockpool.protocol import Ack, Credit, Jobs, Ping, Results, Submit
from sockpool.protocol.control import Cancel, CancelReply, Retry, RetryReply, Stop

from sockpool.protocol import PROTOCOL_VERSION, Hello

from .test_state import C1, C2, MAX, W1, W2, client, job_ids, worker

OPS = 31


def operator(state: BrokerState, conn: int = OPS) -> None:
    state.on_hello(conn, Hello(PROTOCOL_VERSION, "operator", name="ops"), "h:ops", 0.0)


def results(out: list, conn: int) -> list[list]:
    return [e for c, m in out if c == conn and isinstance(m, Results) for e in m.results]


def reply(out: list, conn: int, kind: type = CancelReply):
    [msg] = [m for c, m in out if c == conn and isinstance(m, kind)]
    return msg


def error_type(entry: list) -> str:
    return entry[2]["type"]


def setup(processes: int = 1, **state_options) -> BrokerState:
    state = BrokerState("b1", MAX, **state_options)
    client(state, C1, "s1")
    worker(state, W1, processes=processes)
    return state


def test_cancel_a_queued_job_removes_it_and_it_never_runs():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "square", [1], {}, False], [2, "square", [2], {}, False]]), 1.0)
    out = state.on_message(C1, Cancel(ids=[2]), 2.0)
    assert reply(out, C1).outcomes == [[2, "cancelled"]]
    [entry] = results(out, C1)
    assert entry[0] == 2 and not entry[1] and error_type(entry) == "Cancelled"
    # Only job 1 is ever handed out, however much credit the worker grants.
    out = state.on_message(W1, Credit(10), 3.0)
    assert job_ids(out, W1) == [1]
    assert state.status(3.0)["queue"]["ready"] == 0
    assert state.status(3.0)["totals"]["cancelled"] == 1
    assert not state.failed  # a cancel is not a failure


def test_cancel_a_leased_job_without_stop_leaves_it_running():
    state = setup()
    state.on_message(W1, Credit(1), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False]]), 1.0)
    [gid] = job_ids(out, W1)
    out = state.on_message(C1, Cancel(ids=[1]), 2.0)
    assert reply(out, C1).outcomes == [[1, "running"]]
    assert not [m for _, m in out if isinstance(m, Stop)]
    out = state.on_message(W1, Results([[gid, True, 1]]), 3.0)
    assert results(out, C1) == [[1, True, 1]]


def test_stopping_a_running_job_tells_its_worker_and_ends_it_cancelled():
    state = setup()
    state.on_message(W1, Credit(2), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False]]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Ping(running=[gid]), 1.5)
    out = state.on_message(C1, Cancel(ids=[1], stop=True), 2.0)
    assert reply(out, C1).outcomes == [[1, "stopped"]]
    assert [(c, m.ids) for c, m in out if isinstance(m, Stop)] == [(W1, [gid])]
    [entry] = results(out, C1)
    assert error_type(entry) == "Cancelled"
    # The killed process's report comes late: dropped, never a second outcome.
    out = state.on_message(W1, Results([[gid, False, {"type": "Cancelled", "message": ""}]], credit=1), 3.0)
    assert results(out, C1) == []
    assert state.jobs == {} and not state.failed and not state.due


def test_a_cancel_after_the_result_is_finished_and_changes_nothing():
    state = setup()
    state.on_message(W1, Credit(1), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False]]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Results([[gid, True, 1]]), 2.0)
    out = state.on_message(C1, Cancel(ids=[1], stop=True), 3.0)
    assert reply(out, C1).outcomes == [[1, "finished"]]
    assert results(out, C1) == []
    assert state.sessions["s1"].results[1].entry == [1, True, 1]


def test_cancel_a_job_waiting_for_its_retry():
    state = setup()
    state.on_message(W1, Credit(1), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False, {"retries": 3}]]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Results([[gid, False, {"type": "ValueError", "message": "x"}]], credit=1), 2.0)
    assert len(state.due) == 1
    out = state.on_message(C1, Cancel(ids=[1]), 2.1)
    assert reply(out, C1).outcomes == [[1, "cancelled"]]
    assert not state.due
    assert job_ids(state.tick(1000.0), W1) == []


def test_cancel_a_whole_session_from_another_client_and_by_task():
    state = setup()
    client(state, C2, "s2")
    state.on_message(C1, Submit(1, [[i, "square", [i], {}, False] for i in range(1, 6)]), 1.0)
    out = state.on_message(C2, Cancel(session="s1", stop=True), 2.0)
    assert sorted(reply(out, C2).outcomes) == [[i, "cancelled"] for i in range(1, 6)]
    # The cancelled results go to the submitting session, not the canceller.
    assert sorted(e[0] for e in results(out, C1)) == [1, 2, 3, 4, 5]
    assert state.ready_count == 0 and state.ready_calls == 0
    state.on_message(C1, Submit(2, [[6, "square", [6], {}, False]]), 3.0)
    # By task or broker id is the operator's: a client reaches only its own jobs.
    out = state.on_message(C2, Cancel(task="square"), 4.0)
    assert reply(out, C2).outcomes == []
    [gid] = state.jobs
    out = state.on_message(C2, Cancel(gids=[gid]), 4.0)
    assert reply(out, C2).outcomes == [[gid, "finished"]] and gid in state.jobs
    operator(state)
    out = state.on_message(OPS, Cancel(task="square"), 4.0)
    assert [o for _, o in reply(out, OPS).outcomes] == ["cancelled"]


def test_cancel_is_journalled_as_the_jobs_finish():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "square", [1], {}, False]]), 1.0)
    state.take_journal()
    state.on_message(C1, Cancel(ids=[1]), 2.0)
    [entry] = [e for e in state.take_journal() if e[0] == "finish"]
    assert entry[2] is False and entry[3]["type"] == "Cancelled"


# -- unique keys ----------------------------------------------------------------


def keyed(cid: int, key: str, x: int = 1) -> list:
    return [cid, "square", [x], {}, False, {"key": key}]


def test_a_second_submit_with_the_same_key_follows_the_first_job():
    state = setup()
    client(state, C2, "s2")
    state.on_message(C1, Submit(1, [keyed(1, "invoice-42")]), 1.0)
    state.on_message(C2, Submit(1, [keyed(7, "invoice-42", x=99)]), 1.1)
    assert len(state.jobs) == 1
    out = state.on_message(W1, Credit(5), 2.0)
    [gid] = job_ids(out, W1)
    out = state.on_message(W1, Results([[gid, True, 1]]), 3.0)
    assert results(out, C1) == [[1, True, 1]]
    assert results(out, C2) == [[7, True, 1]]  # the same outcome, under its own id
    assert state.status(3.0)["unique_keys"] == 1


def test_the_key_is_held_until_the_submitter_collects_the_result():
    state = setup()
    client(state, C2, "s2")
    state.on_message(W1, Credit(5), 0.5)
    out = state.on_message(C1, Submit(1, [keyed(1, "k")]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Results([[gid, True, 1]]), 2.0)
    # Finished, result not yet acknowledged: a new submit gets it at once.
    out = state.on_message(C2, Submit(1, [keyed(3, "k")]), 3.0)
    assert results(out, C2) == [[3, True, 1]] and job_ids(out, W1) == []
    # The follower's ack does not free the key; the submitter's does.
    state.on_message(C2, Ack(ids=[3]), 4.0)
    assert state.keys.holder("k") is not None
    state.on_message(C1, Ack(ids=[1]), 5.0)
    assert state.keys.holder("k") is None
    out = state.on_message(C2, Submit(2, [keyed(4, "k")]), 6.0)
    assert len(job_ids(out, W1)) == 1  # a new job


def test_the_key_is_freed_when_its_result_expires():
    state = setup(result_ttl_s=10.0)
    state.on_message(W1, Credit(5), 0.5)
    out = state.on_message(C1, Submit(1, [keyed(1, "k")]), 1.0)
    state.on_message(W1, Results([[job_ids(out, W1)[0], True, 1]]), 2.0)
    state.tick(100.0)
    assert state.keys.holder("k") is None


def test_unique_keys_survive_a_restart():
    state = setup()
    state.on_message(C1, Submit(1, [keyed(1, "k")]), 1.0)
    [job] = state.jobs.values()
    again = BrokerState("b1", MAX)
    again.restore([job], [], [], 10.0, followers=[("s2", 5, job.gid)])
    assert again.keys.holder("k").gid == job.gid
    assert again.jobs[job.gid].followers == [("s2", 5)]
    assert again.sessions["s2"].live == {5: job.gid}


def test_cancelling_a_keyed_job_frees_the_key_once_collected():
    state = setup()
    state.on_message(C1, Submit(1, [keyed(1, "k")]), 1.0)
    state.on_message(C1, Cancel(ids=[1]), 2.0)
    state.on_message(C1, Ack(ids=[1]), 3.0)
    assert state.keys.holder("k") is None


# -- retry from failed ------------------------------------------------------------


def test_retry_sends_a_failed_job_again_to_its_session():
    state = setup()
    client(state, C2, "someone-else")
    operator(state, C2 + 1)
    state.on_message(W1, Credit(5), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [3], {}, False]]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Results([[gid, False, {"type": "ValueError", "message": "x"}]]), 2.0)
    [failed] = state.failed
    # Another client cannot retry it; the operator (or its own session) can.
    out = state.on_message(C2, Retry(gids=[failed.gid]), 2.5)
    assert reply(out, C2, RetryReply) == RetryReply([], [failed.gid])
    out = state.on_message(C2 + 1, Retry(gids=[failed.gid, 12345]), 3.0)
    assert reply(out, C2 + 1, RetryReply) == RetryReply([failed.gid], [12345])
    [new_gid] = job_ids(out, W1)
    assert new_gid != gid and not state.failed
    out = state.on_message(W1, Results([[new_gid, True, 9]]), 4.0)
    assert results(out, C1) == [[1, True, 9]]


def test_retry_all_of_a_task():
    state = setup()
    worker(state, W2, tasks=("cube",))
    operator(state, C2)
    state.on_message(W1, Credit(5), 0.5)
    state.on_message(W2, Credit(5), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False], [2, "cube", [2], {}, False]]), 1.0)
    failures = [[g, False, {"type": "E", "message": ""}] for g in job_ids(out, W1) + job_ids(out, W2)]
    state.on_message(W1, Results(failures[:1]), 2.0)
    state.on_message(W2, Results(failures[1:]), 2.0)
    out = state.on_message(C2, Retry(all=True, task="cube"), 3.0)
    assert len(reply(out, C2, RetryReply).retried) == 1
    assert [f.task for f in state.failed] == ["square"]


def test_stopping_a_prefetched_job_that_has_not_started_yet():
    state = setup(processes=1)
    state.on_message(W1, Credit(3), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", [1], {}, False], [2, "square", [2], {}, False]]), 1.0)
    first, second = job_ids(out, W1)
    state.on_message(W1, Ping(running=[first]), 1.5)  # the second waits in the worker's prefetch
    out = state.on_message(C1, Cancel(ids=[2], stop=True), 2.0)
    assert reply(out, C1).outcomes == [[2, "stopped"]]
    # The worker is told, so that it never starts it (or kills it as it starts).
    assert [(c, m.ids) for c, m in out if isinstance(m, Stop)] == [(W1, [second])]
    assert list(state.workers[W1].leased) == [first]


def test_an_empty_cancel_cancels_nothing():
    state = setup()
    state.on_message(C1, Submit(1, [[1, "square", [1], {}, False]]), 1.0)
    out = state.on_message(C1, Cancel(), 2.0)
    assert reply(out, C1).outcomes == []
    assert len(state.jobs) == 1


def test_cancel_of_an_unknown_session_or_id_is_finished():
    state = setup()
    out = state.on_message(C1, Cancel(ids=[5], session="nobody"), 1.0)
    assert reply(out, C1).outcomes == [[5, "finished"]]
    out = state.on_message(C1, Cancel(gids=[123456]), 1.0)
    assert reply(out, C1).outcomes == [[123456, "finished"]]


def test_a_worker_may_not_cancel_and_a_client_may_not_stop():
    import pytest

    from sockpool.protocol import ProtocolError

    state = setup()
    with pytest.raises(ProtocolError):
        state.on_message(W1, Cancel(ids=[1]), 1.0)
    with pytest.raises(ProtocolError):
        state.on_message(C1, Stop([1]), 1.0)


def test_control_messages_decode_strictly():
    import pytest

    from sockpool.protocol import ProtocolError, decode, encode
    from sockpool.protocol.framing import frame, pack_body

    for msg in (Cancel(ids=[1], session="s", gids=[2], task="t", stop=True), CancelReply([[1, "cancelled"]]),
                Stop([3]), Retry(gids=[4], all=True, task="t"), RetryReply([4], [5])):
        assert decode(encode(msg)[4:]) == msg
    for bad in ({"type": "cancel", "ids": [True]}, {"type": "cancel", "gids": ["1"]}, {"type": "stop", "ids": [1.5]},
                {"type": "retry", "gids": [None]}, {"type": "cancel", "stop": 1}):
        with pytest.raises(ProtocolError):
            decode(frame(pack_body(bad))[4:])


def test_job_options_for_keys_and_limits_are_checked():
    import pytest

    from sockpool.protocol import ProtocolError
    from sockpool.protocol.messages import check_job

    check_job([1, "t", [], {}, False, {"key": "k", "limit_key": "c", "limit": 3}])
    for options in ({"key": ""}, {"key": 5}, {"key": "x" * 257}, {"limit_key": None, "limit": 0},
                    {"limit": True}, {"limit_key": []}):
        with pytest.raises(ProtocolError):
            check_job([1, "t", [], {}, False, options])


def test_a_failed_job_whose_arguments_were_not_kept_cannot_be_retried():
    state = setup()
    state.failed_row_bytes = 2000
    operator(state)
    state.on_message(W1, Credit(5), 0.5)
    out = state.on_message(C1, Submit(1, [[1, "square", ["x" * 5000], {}, False]]), 1.0)
    [gid] = job_ids(out, W1)
    state.on_message(W1, Results([[gid, False, {"type": "ValueError", "message": "x"}]]), 2.0)
    [failed] = state.failed
    assert not failed.retryable and failed.row()[-1] is False
    out = state.on_message(OPS, Retry(all=True), 3.0)
    assert reply(out, OPS, RetryReply) == RetryReply([], [])
