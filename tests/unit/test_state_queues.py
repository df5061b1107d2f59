"""broker/state.py with queues, priorities and delays: transcripts driven by `now`."""

from __future__ import annotations

import pytest

from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Control, Credit, Hello, Results, Submit

from .test_state import C1, C2, MAX, W1, W2, client, job_ids

SQUARE = ["square"]


@pytest.fixture
def state() -> BrokerState:
    return BrokerState("b1", MAX)


def worker(state: BrokerState, conn: int, queues: list[str] | None = None, processes: int = 1) -> None:
    hello = Hello(PROTOCOL_VERSION, "worker", name=f"w{conn}", tasks=SQUARE, processes=processes, queues=queues or [])
    state.on_hello(conn, hello, f"h:{conn}", 0.0)


def entry(cid: int, **options) -> list:
    return [cid, "square", [cid], {}, False, options] if options else [cid, "square", [cid], {}, False]


def test_workers_get_only_jobs_of_their_queues(state):
    client(state, C1)
    worker(state, W1, ["gpu"])
    worker(state, W2)  # no queues: "default"
    state.on_message(C1, Submit(1, [entry(1, queue="gpu"), entry(2), entry(3, queue="gpu"), entry(4)]), 1.0)
    out = state.on_message(W1, Credit(10), 1.0) + state.on_message(W2, Credit(10), 1.0)
    assert sorted(job_ids(out, W1)) == [1, 3]
    assert sorted(job_ids(out, W2)) == [2, 4]


def test_priority_orders_across_everything_the_broker_holds(state):
    client(state, C1)
    worker(state, W1)
    state.on_message(C1, Submit(1, [entry(i) for i in range(1, 501)] + [entry(501, priority=7)]), 1.0)
    out = state.on_message(W1, Credit(2), 1.0)
    assert job_ids(out, W1)[0] == 501


def test_two_sessions_share_one_worker(state):
    client(state, C1, "big")
    client(state, C2, "small")
    worker(state, W1)
    state.on_message(C1, Submit(1, [entry(i) for i in range(1, 1001)]), 1.0)
    state.on_message(C2, Submit(1, [entry(1)]), 1.0)
    out = state.on_message(W1, Credit(2), 1.0)
    sessions = [state.jobs[gid].session for gid in job_ids(out, W1)]
    assert sorted(sessions) == ["big", "small"]


def test_a_delayed_job_is_accepted_at_once_and_runs_at_its_time(state):
    client(state, C1)
    worker(state, W1)
    out = state.on_message(C1, Submit(1, [entry(1, delay=30.0)]), 100.0)
    assert out[0][1].count == 1  # accepted now
    [job] = state.jobs.values()
    assert job.options["at"] == 130.0 and "delay" not in job.options  # stored as an absolute time
    assert job_ids(state.on_message(W1, Credit(5), 100.0), W1) == []
    assert state.next_due() == 130.0
    assert job_ids(state.tick(129.99), W1) == []
    assert job_ids(state.tick(130.0), W1) == [job.gid]


def test_at_in_the_past_runs_now(state):
    client(state, C1)
    worker(state, W1)
    state.on_message(W1, Credit(5), 100.0)
    out = state.on_message(C1, Submit(1, [entry(1, at=50.0)]), 100.0)
    assert len(job_ids(out, W1)) == 1


def test_a_delayed_job_stays_delayed_after_a_restart(state):
    client(state, C1)
    state.on_message(C1, Submit(1, [entry(1, delay=3600.0)]), 100.0)
    [job] = state.jobs.values()
    again = BrokerState("b1", MAX)
    again.restore([job], [], [], now=200.0)
    worker(again, W1)
    assert job_ids(again.on_message(W1, Credit(5), 200.0), W1) == []
    assert job_ids(again.tick(3700.0), W1) == [job.gid]


# -- pause and resume, schedules: through `control` ----------------------------


OP = 31  # an operator's connection


def operator(state: BrokerState, conn: int = OP) -> None:
    state.on_hello(conn, Hello(PROTOCOL_VERSION, "operator", name="ops"), f"h:{conn}", 0.0)


def control(state: BrokerState, op: str, now: float, conn: int = OP, **args):
    if conn not in state.operators and conn == OP:
        operator(state, conn)
    [(to, reply), *rest] = state.on_message(conn, Control(op, args), now)
    assert to == conn
    return reply, rest


def test_control_needs_the_operator_role(state):
    client(state, C1)
    reply, _ = control(state, "pause_queue", 1.0, conn=C1, queue="gpu")
    assert not reply.ok and "operator" in reply.error
    assert "gpu" not in state.dispatcher.paused


def test_a_paused_queue_accepts_and_holds_until_resumed(state):
    client(state, C1)
    worker(state, W1, ["gpu"])
    reply, _ = control(state, "pause_queue", 1.0, queue="gpu")
    assert reply.ok
    out = state.on_message(C1, Submit(1, [entry(1, queue="gpu")]), 1.0) + state.on_message(W1, Credit(5), 1.0)
    assert out[0][1].count == 1 and job_ids(out, W1) == []
    assert state.status(1.0)["queues"]["gpu"]["paused"] is True
    assert ("queue_paused", "gpu", True) in state.take_journal()
    reply, out = control(state, "resume_queue", 2.0, queue="gpu")
    assert reply.ok and len(job_ids(out, W1)) == 1


def test_a_pause_is_restored_after_a_restart(state):
    again = BrokerState("b1", MAX)
    again.restore_settings(["gpu"], [])
    client(again, C1)
    worker(again, W1, ["gpu"])
    again.on_message(C1, Submit(1, [entry(1, queue="gpu")]), 1.0)
    assert job_ids(again.on_message(W1, Credit(5), 1.0), W1) == []


def test_bad_control_requests_get_a_reason_not_a_closed_connection(state):
    client(state, C1)
    for op, args in (("pause_queue", {"queue": "a b"}), ("nope", {}),
                     ("schedule_add", {"name": "x", "cron": "99 * * * *", "task": "t"}),
                     ("schedule_add", {"name": "x", "cron": "* * * * *", "task": "t", "timezone": "Nowhere/Land"}),
                     ("schedule_remove", {"name": "missing"})):
        reply, _ = control(state, op, 1.0, **args)
        assert not reply.ok and reply.error


def test_a_schedule_fires_once_per_fire_time_across_a_restart(state):
    client(state, C1)
    reply, _ = control(state, "schedule_add", 100.0, name="tick", cron="* * * * *", task="square", args=[3])
    assert reply.ok and reply.value["next_fire"] == 120.0
    assert state.next_due() == 120.0
    state.tick(119.0)
    assert not state.jobs
    state.tick(120.05)
    [job] = state.jobs.values()
    assert (job.session, job.cid, job.args) == ("@schedule/tick", 120, [3])
    journal = state.take_journal()
    kinds = [op[0] for op in journal]
    assert "add" in kinds and "schedule" in kinds  # committed together
    record = next(op[1] for op in journal if op[0] == "schedule")
    # Restart from what was journalled: 120 is not fired again; 180 is.
    again = BrokerState("b1", MAX)
    again.restore([job], [], [], now=121.0)
    again.restore_settings([], [record])
    again.tick(121.0)
    assert list(again.jobs) == [job.gid]
    again.tick(180.0)
    assert sorted(j.cid for j in again.jobs.values()) == [120, 180]


def test_a_schedules_job_outcome_is_kept_on_the_schedule_not_as_a_result(state):
    client(state, C1)
    worker(state, W1)
    control(state, "schedule_add", 100.0, name="tick", cron="* * * * *", task="square", args=[3])
    state.on_message(W1, Credit(1), 100.0)
    [gid] = job_ids(state.tick(120.0), W1)
    state.on_message(W1, Results([[gid, True, 9]]), 120.5)
    [row] = state.status(121.0)["schedules"]
    assert row["last_outcome"]["outcome"] == "ok" and row["last_outcome"]["fire"] == 120.0
    assert ("forget", [gid]) in state.take_journal()
    assert not state.sessions["@schedule/tick"].results


def test_clients_may_not_take_a_schedules_session(state):
    [(_, reply)] = client(state, C2, "@schedule/tick")
    assert reply.type == "error"


def test_a_thousand_jobs_due_at_once_do_not_crowd_out_others(state):
    client(state, C1, "many")
    client(state, C2, "other")
    worker(state, W1, processes=2)
    worker(state, W2, ["gpu"])
    state.on_message(C1, Submit(1, [entry(i, at=50.0) for i in range(1, 1001)]), 10.0)
    state.on_message(C2, Submit(1, [entry(1), entry(2, queue="gpu")]), 10.0)
    assert job_ids(state.tick(49.9), W1) == []
    state.tick(50.0)  # all 1000 fall due in one tick
    assert state.ready_count == 1002  # the thousand, and the other client's two
    first = state.on_message(W1, Credit(2), 50.0)
    sessions = sorted(state.jobs[g].session for g in job_ids(first, W1))
    assert sessions == ["many", "other"]  # the other client's job goes with the first of the thousand
    gpu = state.on_message(W2, Credit(1), 50.0)
    assert [state.jobs[g].session for g in job_ids(gpu, W2)] == ["other"]  # another queue is untouched


def test_schedule_arguments_are_bounded_and_hidden_from_clients(state):
    reply, _ = control(state, "schedule_add", 1.0, name="big", cron="* * * * *", task="t", args=["x" * 20_000])
    assert not reply.ok and "bytes" in reply.error
    reply, _ = control(state, "schedule_add", 1.0, name="s", cron="* * * * *", task="t", args=["secret-arg"])
    assert reply.ok
    client(state, C1)
    [row] = state.status(2.0, viewer="some-session")["schedules"]
    assert row["args"] == [] and row["name"] == "s"
    [row] = state.status(2.0)["schedules"]  # the operator's view
    assert row["args"] == ["secret-arg"]
