"""broker/limits.py: admission order, slots, rate windows; and the state's use of it."""

from __future__ import annotations

import pytest

from sockpool.broker.limits import LimitSpec, Limits, parse_limit
from sockpool.broker.records import Job
from sockpool.broker.state import BrokerState
from sockpool.protocol import Credit, Results, Submit
from sockpool.protocol.control import Cancel

from .test_state import C1, MAX, W1, W2, client, job_ids, worker


def make(gid: int, task: str = "fetch", **options) -> Job:
    return Job(gid, "s", gid, task, [gid], {}, False, options or None)


def test_parse_limit_shapes():
    assert parse_limit("mytasks:fetch=4") == ("mytasks:fetch", LimitSpec(4))
    assert parse_limit("api=10/2s") == ("api", LimitSpec(10, 2.0))
    assert parse_limit("api=100/1m") == ("api", LimitSpec(100, 60.0))
    for bad in ("fetch", "fetch=0", "fetch=x", "=3", "a=1/0s"):
        with pytest.raises(ValueError):
            parse_limit(bad)


def test_jobs_over_the_limit_wait_and_start_in_order_as_slots_free():
    limits = Limits({"fetch": LimitSpec(2)})
    jobs = [make(i) for i in range(1, 6)]
    assert [limits.admit(j, 0.0) for j in jobs] == [True, True, False, False, False]
    assert limits.waiting == 3
    assert [j.gid for j in limits.release(jobs[1], 1.0)] == [3]
    assert [j.gid for j in limits.release(jobs[0], 2.0)] == [4]
    assert limits.status(2.0)["fetch"] == {"limit": 2, "per_s": None, "held": 2, "waiting": 1}
    # A job released twice (or never admitted) gives back nothing more.
    assert limits.release(jobs[0], 3.0) == []


def test_a_new_job_waits_behind_those_already_waiting():
    limits = Limits({"fetch": LimitSpec(1)})
    a, b, c = make(1), make(2), make(3)
    limits.admit(a, 0.0)
    limits.admit(b, 0.0)
    limits.release(a, 1.0)  # b takes the slot
    assert not limits.admit(c, 1.0)


def test_a_key_named_by_jobs_takes_its_capacity_from_them_and_is_forgotten_when_idle():
    limits = Limits()
    a, b = make(1, limit_key="customer-7", limit=1), make(2, limit_key="customer-7", limit=1)
    assert limits.admit(a, 0.0) and not limits.admit(b, 0.0)
    assert [j.gid for j in limits.release(a, 1.0)] == [2]
    limits.release(b, 2.0)
    assert limits.status(2.0) == {}
    # A key with no capacity anywhere is no limit.
    assert limits.admit(make(3, limit_key="nobody"), 3.0)


def test_a_job_under_two_limits_needs_both():
    limits = Limits({"fetch": LimitSpec(2), "cust": LimitSpec(1)})
    a = make(1, limit_key="cust")
    b = make(2, limit_key="cust")
    c = make(3)  # task limit only
    assert limits.admit(a, 0.0)
    assert not limits.admit(b, 0.0)  # cust is full
    assert limits.admit(c, 0.0)  # fetch has a slot left
    assert limits.release(c, 1.0) == []  # b still waits on cust
    assert [j.gid for j in limits.release(a, 2.0)] == [2]


def test_a_rate_limit_gives_slots_back_after_its_period_not_at_the_end():
    limits = Limits({"api": LimitSpec(2, per_s=10.0)})
    jobs = [make(i, task="api") for i in range(1, 5)]
    assert [limits.admit(j, 0.0) for j in jobs] == [True, True, False, False]
    assert limits.release(jobs[0], 1.0) == []  # finished, but its slot is the period's
    assert limits.tick(9.9) == []
    assert [j.gid for j in limits.tick(10.0)] == [3, 4]


def test_discard_takes_cancelled_jobs_out_of_the_line():
    limits = Limits({"fetch": LimitSpec(1)})
    a, b, c = make(1), make(2), make(3)
    for j in (a, b, c):
        limits.admit(j, 0.0)
    assert [j.gid for j in limits.discard({2})] == [2]
    assert [j.gid for j in limits.release(a, 1.0)] == [3]


# -- in the state ---------------------------------------------------------------


def test_the_state_never_hands_out_more_than_the_limit_across_workers():
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(3)})
    client(state, C1, "s1")
    worker(state, W1, tasks=("fetch",), processes=4)
    worker(state, W2, tasks=("fetch",), processes=4)
    out = state.on_message(W1, Credit(8), 0.1) + state.on_message(W2, Credit(8), 0.1)
    out = state.on_message(C1, Submit(1, [[i, "fetch", [i], {}, False] for i in range(1, 21)]), 1.0)
    first = job_ids(out, W1) + job_ids(out, W2)
    assert len(first) == 3
    status = state.status(1.0)
    assert status["queue"]["waiting_on_limit"] == 17 and status["queue"]["ready"] == 0
    assert status["limits"]["fetch"]["held"] == 3
    started = list(first)
    now = 2.0
    while len(started) < 20:
        done = started[len(started) - 3]
        conn = W1 if done in state.workers[W1].leased else W2
        out = state.on_message(conn, Results([[done, True, 0]], credit=1), now)
        started += job_ids(out, W1) + job_ids(out, W2)
        assert sum(len(w.leased) for w in state.workers.values()) <= 3
        now += 1.0
    assert started == sorted(started)  # admitted in submission order


def test_a_cancelled_job_waiting_on_a_limit_never_starts():
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    client(state, C1, "s1")
    worker(state, W1, tasks=("fetch",), processes=2)
    state.on_message(W1, Credit(5), 0.1)
    out = state.on_message(C1, Submit(1, [[i, "fetch", [i], {}, False] for i in (1, 2, 3)]), 1.0)
    [first] = job_ids(out, W1)
    out = state.on_message(C1, Cancel(ids=[2]), 2.0)
    assert state.status(2.0)["queue"]["waiting_on_limit"] == 1
    out = state.on_message(W1, Results([[first, True, 0]]), 3.0)
    [second] = job_ids(out, W1)
    assert state.jobs[second].cid == 3


def test_a_job_back_from_a_lost_worker_keeps_its_slot():
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    client(state, C1, "s1")
    worker(state, W1, tasks=("fetch",))
    state.on_message(W1, Credit(1), 0.1)
    out = state.on_message(C1, Submit(1, [[i, "fetch", [i], {}, False] for i in (1, 2)]), 1.0)
    [first] = job_ids(out, W1)
    state.on_disconnect(W1, 2.0)
    worker(state, W2, tasks=("fetch",))
    out = state.on_message(W2, Credit(5), 3.0)
    assert job_ids(out, W2) == [first]  # not the waiting one: the limit holds


def test_limited_jobs_are_admitted_again_after_a_restart():
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    client(state, C1, "s1")
    state.on_message(C1, Submit(1, [[i, "fetch", [i], {}, False] for i in (1, 2)]), 1.0)
    jobs = list(state.jobs.values())
    for j in jobs:
        j.limits = None  # as loaded from the store
    again = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    again.restore(jobs, [], [], 10.0)
    assert again.ready_count == 1 and again.limits.waiting == 1


def test_broker_status_text_shows_limits_and_jobs_waiting_on_them():
    from sockpool.broker.report import format_status

    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1), "api": LimitSpec(5, per_s=60.0)})
    client(state, C1, "s1")
    state.on_message(C1, Submit(1, [[i, "fetch", [i], {}, False] for i in (1, 2, 3)]), 1.0)
    text = format_status(state.status(2.0))
    assert "waiting on a limit 2" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith(("fetch", "api"))}
    assert rows == {"fetch": ["1", "1", "2"], "api": ["5/60s", "0", "0"]}  # capacity, held, waiting


def test_jobs_of_other_tasks_pass_a_limited_broker_untouched_in_order():
    # A limit on "fetch" holds back fetch jobs only: "square" jobs submitted
    # around them all go out, in order, and hold no slot.
    state = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    client(state, C1, "s1")
    worker(state, W1, tasks=("fetch", "square"), processes=8)
    state.on_message(W1, Credit(20), 0.1)
    entries = [[i, "fetch" if i % 3 == 0 else "square", [i], {}, False] for i in range(1, 13)]
    out = state.on_message(C1, Submit(1, entries), 1.0)
    sent = [state.jobs[gid] for gid in job_ids(out, W1)]
    squares = [j.cid for j in sent if j.task == "square"]
    assert squares == [i for i in range(1, 13) if i % 3]
    assert [j.cid for j in sent if j.task == "fetch"] == [3]
    assert all(j.limits is None for j in sent if j.task == "square")
    assert state.limits.waiting == 3 and state.limits.status(1.0)["fetch"]["held"] == 1
    # After a restart the same split holds: plain jobs in runs, fetch jobs admitted one at a time.
    jobs = list(state.jobs.values())
    for j in jobs:
        j.limits, j.worker = None, None  # as loaded from the store
    again = BrokerState("b1", MAX, limits={"fetch": LimitSpec(1)})
    again.restore(jobs, [], [], 10.0)
    assert again.ready_count == 9 and again.limits.waiting == 3
