"""broker/state.py with queues, priorities and delays: transcripts driven by `now`."""

from __future__ import annotations

import pytest

from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Credit, Hello, Submit

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
