"""broker/quota.py through BrokerState: past a limit a submit is refused
job by job with BrokerFull, and nothing already accepted is touched."""

from __future__ import annotations

from sockpool.broker.quota import JOB_OVERHEAD_BYTES, Quota
from sockpool.broker.state import BrokerState
from sockpool.protocol import PROTOCOL_VERSION, Accepted, Credit, Hello, Jobs, Results, Submit

C1, C2, W1 = 11, 12, 21


def setup(quota: Quota) -> BrokerState:
    state = BrokerState("b1", 1 << 20, quota=quota)
    state.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="a" * 32), "h:1", 0.0)
    state.on_hello(C2, Hello(PROTOCOL_VERSION, "client", session="b" * 32), "h:2", 0.0)
    return state


def submit(state: BrokerState, conn: int, batch: int, cids: range, frame_bytes: int = 0) -> tuple[int, list]:
    out = state.on_message(conn, Submit(batch, [[cid, "echo", [cid], {}, False] for cid in cids]), 1.0, frame_bytes)
    [accepted] = [m.count for c, m in out if isinstance(m, Accepted)]
    refused = [e for c, m in out if isinstance(m, Results) for e in m.results]
    return accepted, refused


def test_past_the_total_job_limit_jobs_are_refused_broker_full():
    state = setup(Quota(max_jobs=5))
    accepted, refused = submit(state, C1, 1, range(1, 9))
    assert accepted == 5 and [e[0] for e in refused] == [6, 7, 8]
    assert all(e[1] is False and e[2]["type"] == "BrokerFull" for e in refused)
    assert "--max-queued-jobs" in refused[0][2]["message"]
    accepted, refused = submit(state, C2, 1, range(1, 3))  # full for everyone
    assert accepted == 0 and len(refused) == 2
    assert len(state.jobs) == 5  # nothing accepted was touched


def test_a_finished_job_makes_room_again():
    state = setup(Quota(max_jobs=1))
    assert submit(state, C1, 1, range(1, 2))[0] == 1
    assert submit(state, C1, 2, range(2, 3))[0] == 0
    state.on_hello(W1, Hello(PROTOCOL_VERSION, "worker", tasks=["echo"], processes=1), "h:w", 1.0)
    [jobs] = [m for c, m in state.on_message(W1, Credit(1), 1.0) if isinstance(m, Jobs)]
    state.on_message(W1, Results([[jobs.jobs[0][0], True, 1]]), 2.0)
    assert submit(state, C1, 3, range(3, 4))[0] == 1


def test_one_results_frame_of_two_sessions_jobs_gives_each_session_its_room_back():
    # The successes of a frame give their quota back per run of one
    # session's jobs (outcomes.finish_succeeded): interleaved sessions,
    # each run counted to its own session.
    state = setup(Quota(max_session_jobs=3, max_jobs=5))
    assert submit(state, C1, 1, range(1, 4))[0] == 3
    assert submit(state, C2, 1, range(1, 3))[0] == 2
    assert submit(state, C2, 2, range(3, 4))[0] == 0  # the total is full
    state.on_hello(W1, Hello(PROTOCOL_VERSION, "worker", tasks=["echo"], processes=1), "h:w", 1.0)
    [jobs] = [m for c, m in state.on_message(W1, Credit(5), 1.0) if isinstance(m, Jobs)]
    by_gid = {job.gid: job.session for job in state.jobs.values()}
    a = [e[0] for e in jobs.jobs if by_gid[e[0]] == "a" * 32]
    b = [e[0] for e in jobs.jobs if by_gid[e[0]] == "b" * 32]
    # a, b, a: three runs; a's third job stays running.
    state.on_message(W1, Results([[a[0], True, 1], [b[0], True, 1], [b[1], True, 1], [a[1], True, 1]]), 2.0)
    assert (state.quota.jobs, state.quota.bytes) == (1, JOB_OVERHEAD_BYTES)
    assert submit(state, C2, 3, range(3, 7))[0] == 3  # b's own limit again, not the total
    assert submit(state, C1, 2, range(4, 7))[0] == 1  # a holds one: the total (5) is reached


def test_session_limits_leave_other_sessions_alone():
    state = setup(Quota(max_session_jobs=2))
    assert submit(state, C1, 1, range(1, 5))[0] == 2
    assert submit(state, C2, 1, range(1, 3))[0] == 2


def test_byte_limits_count_the_frame_share_and_a_per_job_overhead():
    state = setup(Quota(max_bytes=3 * (JOB_OVERHEAD_BYTES + 1000), max_session_bytes=2 * (JOB_OVERHEAD_BYTES + 1000)))
    accepted, refused = submit(state, C1, 1, range(1, 4), frame_bytes=3000)  # 1000 bytes a job
    assert accepted == 2 and "--max-session-bytes" in refused[0][2]["message"]
    accepted, refused = submit(state, C2, 1, range(1, 3), frame_bytes=2000)
    assert accepted == 1 and "--max-store-bytes" in refused[0][2]["message"]
    assert state.quota.jobs == 3 and state.quota.bytes == 3 * (JOB_OVERHEAD_BYTES + 1000)


def test_quotas_count_the_jobs_restored_after_a_restart():
    state = setup(Quota(max_jobs=2))
    submit(state, C1, 1, range(1, 3))
    restarted = BrokerState("b1", 1 << 20, quota=Quota(max_jobs=2))
    restarted.restore(list(state.jobs.values()), [], [], 5.0)
    assert restarted.quota.jobs == 2
    restarted.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="c" * 32), "h:1", 5.0)
    assert submit(restarted, C1, 1, range(1, 2))[0] == 0
