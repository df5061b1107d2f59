"""broker/restore.py: jobs read back from the store are queued again as
they were accepted, on the bulk path a restart's million jobs take."""

from __future__ import annotations

import msgpack

from sockpool.broker.quota import JOB_OVERHEAD_BYTES, Quota
from sockpool.broker.records import Job
from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Credit, Hello, Jobs

W1 = 21


def stored(gid: int, session: str, options: dict | None = None, task: str = "square") -> Job:
    body = msgpack.packb([[gid], {}, False, options], use_bin_type=True)
    return Job.restored(gid, session, gid % 1000, task, body, 0, len(body))


def handed_out(state: BrokerState, n: int) -> list[int]:
    hello = Hello(PROTOCOL_VERSION, "worker", name="w", tasks=["square"], processes=n)
    out = state.on_hello(W1, hello, "h:1", 10.0) + state.on_message(W1, Credit(n), 10.0)
    return [entry[0] for _, msg in out if isinstance(msg, Jobs) for entry in msg.jobs]


def test_plain_and_optioned_jobs_come_back_in_the_order_they_were_accepted():
    state = BrokerState("b1", 1 << 20, quota=Quota(max_jobs=100))
    jobs = [stored(1, "a"), stored(2, "a"), stored(3, "a", {"retries": 1}), stored(4, "a"),
            stored(5, "a", {"key": "k"}), stored(6, "b"), stored(7, "a", {"at": 1e12})]
    state.restore(list(reversed(jobs)), [], [], 10.0)  # in any order: the gids say which came first
    assert sorted(state.jobs) == [1, 2, 3, 4, 5, 6, 7]
    assert state.sessions["a"].live == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 7: 7} and state.sessions["b"].live == {6: 6}
    assert state.keys.holder("k").gid == 5
    assert len(state.due) == 1  # the one due in the future waits
    assert state.quota.jobs == 7 and state.quota.bytes == sum(job.cost for job in jobs)
    assert all(job.cost == len(job.stored_body()) + JOB_OVERHEAD_BYTES for job in jobs)
    # Session a's line keeps its order; b takes its turn after a's first.
    assert handed_out(state, 6) == [1, 6, 2, 3, 4, 5]


def test_restored_jobs_of_one_size_share_one_cost():
    state = BrokerState("b1", 1 << 20)
    state.restore([stored(gid, "a") for gid in range(300, 310)], [], [], 10.0)
    assert len({id(job.cost) for job in state.jobs.values()}) == 1


def test_each_line_of_session_and_task_keeps_its_order_across_interleaved_jobs():
    state = BrokerState("b1", 1 << 20)
    jobs = [stored(gid, "ab"[gid % 2], task=("t1", "t2", "t3")[gid % 3]) for gid in range(1, 61)]
    state.restore(jobs, [], [], 10.0)
    lines = state.dispatcher.queues["default"].levels[0].lines
    for session in "ab":
        for task in ("t1", "t2", "t3"):
            expected = [j.gid for j in jobs if j.session == session and j.task == task]
            assert [j.gid for j in lines[session][task]] == expected
    assert state.dispatcher.count == 60 and state.dispatcher.by_task == {"t1": 20, "t2": 20, "t3": 20}
    assert set(state.unserved.since) == {"t1", "t2", "t3"}
