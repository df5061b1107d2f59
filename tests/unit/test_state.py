"""broker/state.py: the broker's queue core, as transcripts of messages in and out.

Every call passes `now` explicitly; nothing here opens a socket or sleeps.
Connection ids: clients are 1x, workers 2x (a reconnect gets a new id).
"""

from __future__ import annotations

import pytest

from sockpool.broker.state import BrokerState
from sockpool.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Credit,
    Drain,
    Error,
    Hello,
    Jobs,
    Notice,
    Ping,
    Pong,
    ProtocolError,
    Results,
    Submit,
    Welcome,
)

MAX = 1 << 20
C1, C2, W1, W2, W3 = 11, 12, 21, 22, 23


@pytest.fixture
def state() -> BrokerState:
    return BrokerState("b1", MAX)


def client(state: BrokerState, conn: int, session: str = "", now: float = 0.0) -> list:
    return state.on_hello(conn, Hello(PROTOCOL_VERSION, "client", name=f"c{conn}", session=session), f"h:{conn}", now)


def worker(state: BrokerState, conn: int, tasks=("square",), processes: int = 1, now: float = 0.0) -> list:
    hello = Hello(PROTOCOL_VERSION, "worker", name=f"w{conn}", tasks=list(tasks), processes=processes)
    return state.on_hello(conn, hello, f"h:{conn}", now)


def job(cid: int, task: str = "square", *args, many: bool = False) -> list:
    return [cid, task, list(args) or [cid], {}, many]


def leased(gid: int, task: str = "square", *args, many: bool = False) -> list:
    """A job entry as the broker sends it: its own id (gids count from 1)."""
    return [gid, task, list(args), {}, many]


def is_welcome(reply: tuple, conn: int, session: str | None = "", processes: int = 0) -> bool:
    """`reply` is (conn, a welcome from this broker for `session`); None: any session."""
    to, msg = reply
    return (
        to == conn
        and isinstance(msg, Welcome)
        and (msg.version, msg.broker, msg.max_frame_bytes, msg.processes) == (PROTOCOL_VERSION, "b1", MAX, processes)
        and (session is None or msg.session == session)
    )


def without_notices(out: list) -> list:
    return [(c, m) for c, m in out if not isinstance(m, Notice)]


def job_ids(out: list, conn: int) -> list[int]:
    return [e[0] for c, m in out if c == conn and isinstance(m, Jobs) for e in m.jobs]


# -- handshake ------------------------------------------------------------------


def test_client_hello_gets_welcome_with_its_session(state):
    [reply] = client(state, C1, "sess-a", now=1.0)
    assert is_welcome(reply, C1, "sess-a")
    assert state.role(C1) == "client"


def test_client_without_session_gets_a_fresh_one(state):
    [(_, w1)] = client(state, C1)
    [(_, w2)] = client(state, C2)
    assert is_welcome((C1, w1), C1, None) and is_welcome((C2, w2), C2, None)
    assert w1.session and w2.session and w1.session != w2.session


def test_worker_hello_and_processes_in_later_welcomes(state):
    [reply] = worker(state, W1, ["square", "echo"], processes=3)
    assert is_welcome(reply, W1, "", processes=3)
    [reply] = worker(state, W2, processes=2)
    assert is_welcome(reply, W2, "", processes=5)
    assert state.role(W1) == "worker"
    [reply] = client(state, C1, "s")
    assert is_welcome(reply, C1, "s", processes=5)


def test_version_mismatch_refused(state):
    [(conn, reply)] = state.on_hello(C1, Hello(PROTOCOL_VERSION + 1, "client"), "h", 0.0)
    assert conn == C1 and isinstance(reply, Error)
    assert reply.code == "version_mismatch"
    assert state.role(C1) is None


@pytest.mark.parametrize("hello", [Hello(PROTOCOL_VERSION, "admin"), Hello(PROTOCOL_VERSION, "worker", tasks=["square"])])
def test_bad_role_refused(state, hello):
    [(conn, reply)] = state.on_hello(W1, hello, "h", 0.0)
    assert conn == W1 and isinstance(reply, Error) and reply.code == "bad_role"
    assert state.role(W1) is None
    assert state.snapshot()["workers"] == 0


# -- submit and dispatch ------------------------------------------------------------


def test_submit_is_accepted(state):
    client(state, C1, "s")
    assert without_notices(state.on_message(C1, Submit(5, [job(1), job(2)]), 1.0)) == [(C1, Accepted(5, 2))]
    assert state.snapshot()["ready"] == 2


def test_with_no_workers_jobs_wait_for_the_first_worker(state):
    client(state, C1, "s")
    assert without_notices(state.on_message(C1, Submit(1, [job(1, "anything", 7), job(2, "tests.tasks:add", 1, 2)]), 0.0)) == [
        (C1, Accepted(1, 2))
    ]
    [reply] = worker(state, W1, ["anything", "tests.tasks:add"], now=1.0)
    assert is_welcome(reply, W1, "", processes=1)
    # Nothing is sent before the worker grants credit.
    out = state.on_message(W1, Credit(5), 2.0)
    assert sorted(job_ids(out, W1)) == [1, 2]
    sent = {e[0]: e for _, m in out for e in m.jobs}
    assert sent[1] == leased(1, "anything", 7)
    assert sent[2] == leased(2, "tests.tasks:add", 1, 2)


def test_jobs_only_within_credit(state):
    client(state, C1, "s")
    worker(state, W1)
    assert state.on_message(W1, Credit(2), 0.0) == []  # nothing queued yet
    out = state.on_message(C1, Submit(1, [job(i) for i in range(1, 6)]), 1.0)
    assert out == [(C1, Accepted(1, 5)), (W1, Jobs([leased(1, "square", 1), leased(2, "square", 2)]))]
    # Credit 0 grants nothing.
    assert state.on_message(W1, Credit(0), 2.0) == []
    # One result back, one more credit: one more job.
    out = state.on_message(W1, Results([[1, True, 1]], credit=1), 3.0)
    assert out == [(C1, Results([[1, True, 1]])), (W1, Jobs([leased(3, "square", 3)]))]
    # A result without credit frees nothing for the broker to use.
    assert state.on_message(W1, Results([[2, True, 4]]), 4.0) == [(C1, Results([[2, True, 4]]))]
    out = state.on_message(W1, Credit(10), 5.0)
    assert job_ids(out, W1) == [4, 5]
    assert state.workers[W1].credit == 8


def test_credit_accumulates_and_is_never_exceeded(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    state.on_message(W1, Credit(2), 0.0)
    out = state.on_message(C1, Submit(1, [job(i) for i in range(1, 10)]), 0.0)
    assert job_ids(out, W1) == [1, 2, 3]
    out = state.on_message(C1, Submit(2, [job(10)]), 0.0)
    assert out == [(C1, Accepted(2, 1))]
    assert len(state.workers[W1].leased) == 3


def test_negative_credit_is_a_protocol_error(state):
    worker(state, W1)
    with pytest.raises(ProtocolError):
        state.on_message(W1, Credit(-1), 0.0)


def test_many_flag_and_kwargs_pass_through(state):
    client(state, C1, "s")
    worker(state, W1, ["tests.tasks:greet"])
    state.on_message(W1, Credit(4), 0.0)
    entry = [3, "tests.tasks:greet", ["ann", "bob"], {"greeting": "hi"}, True]
    out = state.on_message(C1, Submit(1, [entry]), 0.0)
    assert out[1] == (W1, Jobs([[1, "tests.tasks:greet", ["ann", "bob"], {"greeting": "hi"}, True]]))


def test_a_job_goes_only_to_a_worker_serving_its_task(state):
    client(state, C1, "s")
    worker(state, W1, ["a"])
    worker(state, W2, ["b"])
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(W2, Credit(10), 0.0)
    out = state.on_message(C1, Submit(1, [job(1, "b"), job(2, "a"), job(3, "b")]), 0.0)
    assert job_ids(out, W1) == [2]
    assert sorted(job_ids(out, W2)) == [1, 3]


def test_unknown_task_on_a_settled_cluster_fails_after_the_grace_naming_the_closest(state):
    client(state, C1, "s")
    worker(state, W1, ["square", "cube"])
    state.on_message(W1, Credit(10), 0.0)
    out = state.on_message(C1, Submit(4, [job(1, "sqaure"), job(2, "square")]), 100.0)
    assert out[0] == (C1, Accepted(4, 2))
    [(conn, notice)] = [(c, m) for c, m in out if isinstance(m, Notice)]
    assert conn == C1 and notice.code == "unserved"
    assert "'sqaure'" in notice.message and "cube, square" in notice.message
    assert "did you mean 'square'?" in notice.message and "at most 10 s" in notice.message
    assert not failures(state.tick(109.9))
    [(conn, refused)] = failures(state.tick(110.0))
    [[cid, ok, error]] = refused.results
    assert (conn, cid, ok, error["type"]) == (C1, 1, False, "UnknownTask")
    assert "'sqaure'" in error["message"] and "did you mean 'square'?" in error["message"]
    assert state.status(110.0)["unserved"] == []


def failures(out: list) -> list:
    return [(c, m) for c, m in out if isinstance(m, Results)]


def test_a_job_whose_worker_is_still_joining_is_not_failed(state):
    client(state, C1, "s")
    worker(state, W1, ["a"])  # an older worker, settled long ago
    state.on_message(C1, Submit(1, [job(1, "b")]), 100.0)
    assert not failures(state.tick(105.0))
    worker(state, W2, ["b"], now=108.0)
    out = state.on_message(W2, Credit(1), 108.0)
    assert job_ids(out, W2) == [1]
    assert not failures(state.tick(500.0))


def test_every_worker_joining_gives_a_waiting_job_the_grace_again(state):
    client(state, C1, "s")
    worker(state, W1, ["a"])
    state.on_message(C1, Submit(1, [job(1, "b")]), 100.0)
    worker(state, W2, ["c"], now=108.0)  # a cluster still starting up
    assert not failures(state.tick(117.9))
    assert failures(state.tick(118.0))


def test_with_no_worker_at_all_jobs_wait_the_timeout(state):
    client(state, C1, "s")
    out = state.on_message(C1, Submit(1, [job(1, "b")]), 0.0)
    [notice] = [m for _, m in out if isinstance(m, Notice)]
    assert "no worker is connected" in notice.message and "at most 600 s" in notice.message
    assert state.status(1.0)["unserved"] == [{"task": "b", "jobs": 1, "waiting_s": 1.0, "fails_in_s": 599.0}]
    assert not failures(state.tick(599.0))
    [(_, refused)] = failures(state.tick(600.0))
    assert "no worker is connected" in refused.results[0][2]["message"]


def test_workers_that_keep_joining_do_not_make_the_wait_endless(state):
    client(state, C1, "s")
    state.on_message(C1, Submit(1, [job(1, "b")]), 0.0)
    for n in range(1, 200):  # a worker not serving b joins every 5 s
        worker(state, 100 + n, ["a"], now=5.0 * n)
        out = state.tick(5.0 * n)
        if failures(out):
            assert 5.0 * n == 600.0
            return
    raise AssertionError("the job never failed")


def test_task_fails_after_the_grace_once_its_last_worker_leaves(state):
    client(state, C1, "s")
    worker(state, W1, ["a"])
    worker(state, W2, ["b"])
    state.on_message(C1, Submit(1, [job(1, "b"), job(2, "a")]), 1.0)  # no credit yet: both wait
    out = state.on_disconnect(W2, 50.0)
    [(conn, notice)] = [(c, m) for c, m in out if isinstance(m, Notice)]  # never waiting without a word
    assert conn == C1 and "'b'" in notice.message and "at most 10 s" in notice.message
    assert [t["task"] for t in state.status(50.0)["unserved"]] == ["b"]
    assert not failures(state.tick(59.9))
    [(_, refused)] = failures(state.tick(60.0))
    assert refused.results[0][:2] == [1, False] and refused.results[0][2]["type"] == "UnknownTask"
    assert "a" in state.dispatcher.by_task  # the served task's job still waits for credit


# -- result routing ------------------------------------------------------------------


def test_results_go_only_to_the_submitting_session(state):
    client(state, C1, "s1")
    client(state, C2, "s2")
    worker(state, W1)
    state.on_message(W1, Credit(10), 0.0)
    # Both clients use job id 1; the broker's ids differ.
    out = state.on_message(C1, Submit(1, [job(1, "square", 3)]), 0.0)
    assert out == [(C1, Accepted(1, 1)), (W1, Jobs([leased(1, "square", 3)]))]
    out = state.on_message(C2, Submit(1, [job(1, "square", 4)]), 0.0)
    assert out == [(C2, Accepted(1, 1)), (W1, Jobs([leased(2, "square", 4)]))]
    assert state.on_message(W1, Results([[2, True, 16]]), 1.0) == [(C2, Results([[1, True, 16]]))]
    assert state.on_message(W1, Results([[1, False, {"type": "E", "message": "m", "traceback": ""}]]), 1.0) == [
        (C1, Results([[1, False, {"type": "E", "message": "m", "traceback": ""}]]))
    ]


def test_one_results_message_is_split_by_session(state):
    client(state, C1, "s1")
    client(state, C2, "s2")
    worker(state, W1)
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(C1, Submit(1, [job(10), job(11)]), 0.0)  # gids 1, 2
    state.on_message(C2, Submit(1, [job(20)]), 0.0)  # gid 3
    out = state.on_message(W1, Results([[3, True, "c"], [1, True, "a"], [2, True, "b"]], credit=3), 1.0)
    assert sorted(out, key=lambda r: r[0]) == [
        (C1, Results([[10, True, "a"], [11, True, "b"]])),
        (C2, Results([[20, True, "c"]])),
    ]


def test_reconnecting_client_gets_its_undelivered_results(state):
    client(state, C1, "sess")
    worker(state, W1)
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(C1, Submit(1, [job(1), job(2)]), 0.0)
    assert state.on_disconnect(C1, 1.0) == []
    # Results for a session with no connection wait.
    assert state.on_message(W1, Results([[1, True, 1]]), 2.0) == []
    assert state.on_message(W1, Results([[2, True, 4]]), 3.0) == []
    # Same session, new connection: welcome, then everything it missed.
    first, *rest = client(state, C2, "sess", now=4.0)
    assert is_welcome(first, C2, "sess", processes=1)
    assert rest == [(C2, Results([[1, True, 1], [2, True, 4]]))]
    # From now on results go to the new connection.
    state.on_message(C2, Submit(2, [job(3)]), 5.0)
    assert state.on_message(W1, Results([[3, True, 9]]), 6.0) == [(C2, Results([[3, True, 9]]))]


def test_results_follow_the_session_to_its_new_connection(state):
    client(state, C1, "sess")
    worker(state, W1)
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(C1, Submit(1, [job(1)]), 0.0)
    state.on_disconnect(C1, 1.0)
    client(state, C2, "sess", now=2.0)
    assert state.on_message(W1, Results([[1, True, 1]]), 3.0) == [(C2, Results([[1, True, 1]]))]


def test_old_connection_closing_late_does_not_detach_the_session(state):
    client(state, C1, "sess")
    client(state, C2, "sess")  # took the session over before C1 was noticed gone
    worker(state, W1)
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(C2, Submit(1, [job(1)]), 0.0)
    assert state.on_disconnect(C1, 1.0) == []
    assert state.on_message(W1, Results([[1, True, 1]]), 2.0) == [(C2, Results([[1, True, 1]]))]


# -- fair share ----------------------------------------------------------------------


def test_a_big_credit_does_not_take_every_job(state):
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(W2, Credit(100), 0.0)
    out = state.on_message(C1, Submit(1, [job(i) for i in range(1, 11)]), 1.0)
    assert len(job_ids(out, W1)) == 5
    assert len(job_ids(out, W2)) == 5
    assert sorted(job_ids(out, W1) + job_ids(out, W2)) == list(range(1, 11))


def test_share_is_proportional_to_processes(state):
    client(state, C1, "s")
    worker(state, W1, processes=3)
    worker(state, W2, processes=1)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(W2, Credit(100), 0.0)
    out = state.on_message(C1, Submit(1, [job(i) for i in range(1, 9)]), 1.0)
    assert (len(job_ids(out, W1)), len(job_ids(out, W2))) == (6, 2)


def test_a_new_batch_goes_whole_to_the_worker_holding_least(state):
    """The share is of the load: W1 still holds 10 jobs, so the next 6 go
    to W2 in one frame, not 3 and 3 (which would leave W1 with 13 to W2's 3)."""
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(C1, Submit(1, [job(i) for i in range(1, 11)]), 1.0)
    state.on_message(W2, Credit(100), 1.0)
    out = state.on_message(C1, Submit(2, [job(i) for i in range(11, 17)]), 2.0)
    assert job_ids(out, W1) == []
    assert job_ids(out, W2) == list(range(11, 17))
    assert [c for c, m in out if isinstance(m, Jobs)] == [W2]


def test_a_batch_fills_the_least_loaded_worker_up_to_the_others_level(state):
    """W1 holds 4: of 10 new jobs W2 gets 7 and W1 3, so both hold 7."""
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(C1, Submit(1, [job(i) for i in range(1, 5)]), 1.0)
    state.on_message(W2, Credit(100), 1.0)
    out = state.on_message(C1, Submit(2, [job(i) for i in range(5, 15)]), 2.0)
    assert (len(job_ids(out, W1)), len(job_ids(out, W2))) == (3, 7)
    assert sorted(job_ids(out, W1) + job_ids(out, W2)) == list(range(5, 15))


def test_the_level_counts_processes(state):
    """W1 (1 process) holds 2, W2 (3 processes) holds none: of 6 new jobs
    W2 gets 6, as (6 + 2) / 4 processes is 2 jobs a process, W1's load already."""
    client(state, C1, "s")
    worker(state, W1, processes=1)
    worker(state, W2, processes=3)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(C1, Submit(1, [job(1), job(2)]), 1.0)
    state.on_message(W2, Credit(100), 1.0)
    out = state.on_message(C1, Submit(2, [job(i) for i in range(3, 9)]), 2.0)
    assert (len(job_ids(out, W1)), len(job_ids(out, W2))) == (0, 6)


def test_single_jobs_alternate_between_idle_workers(state):
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(100), 0.0)
    state.on_message(W2, Credit(100), 0.0)
    first = state.on_message(C1, Submit(1, [job(1)]), 1.0)[1][0]
    second = state.on_message(C1, Submit(2, [job(2)]), 1.0)[1][0]
    assert {first, second} == {W1, W2}


def test_a_worker_with_no_credit_gets_nothing(state):
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(100), 0.0)
    out = state.on_message(C1, Submit(1, [job(i) for i in range(1, 5)]), 1.0)
    assert job_ids(out, W1) == [1, 2, 3, 4]
    assert job_ids(out, W2) == []


# -- worker loss and late results ---------------------------------------------------------


def test_worker_disconnect_requeues_its_leases_at_the_front(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(2), 0.0)
    state.on_message(C1, Submit(1, [job(i) for i in range(1, 5)]), 0.0)  # W1 holds 1, 2; 3, 4 wait
    assert without_notices(state.on_disconnect(W1, 1.0)) == []  # no worker left to take them (the client is told)
    assert state.snapshot()["ready"] == 4
    assert state.totals["requeued"] == 2
    worker(state, W2, now=2.0)
    out = state.on_message(W2, Credit(10), 2.0)
    assert job_ids(out, W2) == [1, 2, 3, 4]


def test_worker_disconnect_hands_its_jobs_to_a_worker_with_credit(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(3), 0.0)
    state.on_message(C1, Submit(1, [job(i) for i in range(1, 4)]), 0.0)
    worker(state, W2)
    assert state.on_message(W2, Credit(2), 0.0) == []  # W1 holds everything
    out = state.on_disconnect(W1, 1.0)
    assert out == [(W2, Jobs([leased(1, "square", 1), leased(2, "square", 2)]))]
    assert state.snapshot()["ready"] == 1


def test_late_result_from_a_former_lease_holder_is_dropped(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    state.on_message(C1, Submit(1, [job(1)]), 0.0)  # gid 1 leased to W1
    state.on_disconnect(W1, 1.0)
    worker(state, W2, now=1.0)
    assert job_ids(state.on_message(W2, Credit(1), 1.0), W2) == [1]
    # W1 comes back on a new connection and reports the job it ran before.
    worker(state, W3, now=2.0)
    assert state.on_message(W3, Results([[1, True, "stale"]]), 2.0) == []
    assert 1 in state.workers[W2].leased
    # The lease holder's result is the one delivered, once.
    assert state.on_message(W2, Results([[1, True, "fresh"]]), 3.0) == [(C1, Results([[1, True, "fresh"]]))]
    assert state.on_message(W2, Results([[1, True, "again"]]), 4.0) == []


def test_result_for_another_workers_lease_is_dropped(state):
    client(state, C1, "s")
    worker(state, W1)
    worker(state, W2)
    state.on_message(W1, Credit(1), 0.0)
    state.on_message(C1, Submit(1, [job(1)]), 0.0)
    assert state.on_message(W2, Results([[1, True, "not mine"], [99, True, "unknown"]]), 1.0) == []
    assert 1 in state.workers[W1].leased


# -- roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [Results([[1, True, 1]]), Credit(1), Jobs([]), Accepted(1, 1), Hello(PROTOCOL_VERSION, "client"), Welcome(1, "b", 1)],
    ids=lambda m: m.type,
)
def test_client_may_not_send_worker_or_broker_messages(state, msg):
    client(state, C1, "s")
    with pytest.raises(ProtocolError, match="from a client"):
        state.on_message(C1, msg, 0.0)


@pytest.mark.parametrize(
    "msg",
    [Submit(1, [job(1)]), Jobs([]), Accepted(1, 1), Hello(PROTOCOL_VERSION, "worker", processes=1), Error("x", "y")],
    ids=lambda m: m.type,
)
def test_worker_may_not_send_client_or_broker_messages(state, msg):
    worker(state, W1)
    with pytest.raises(ProtocolError, match="from a worker"):
        state.on_message(W1, msg, 0.0)
    assert state.snapshot()["ready"] == 0


def test_unadmitted_connection_may_not_submit(state):
    with pytest.raises(ProtocolError):
        state.on_message(C1, Submit(1, [job(1)]), 0.0)


def test_ping_is_answered_for_either_role(state):
    client(state, C1, "s")
    worker(state, W1)
    assert state.on_message(C1, Ping(), 0.0) == [(C1, Pong())]
    assert state.on_message(W1, Ping(), 0.0) == [(W1, Pong())]
    assert state.on_message(W1, Pong(), 0.0) == []


# -- regressions: bugs these tests found ---------------------------------------------------


def test_results_with_negative_credit_lose_no_result(state):
    """A negative credit used to be refused only after the results were taken
    off the lease and their outbox built; the exception discarded it."""
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    state.on_message(C1, Submit(1, [job(1)]), 0.0)
    with pytest.raises(ProtocolError):
        state.on_message(W1, Results([[1, True, 1]], credit=-1), 1.0)
    out = state.on_disconnect(W1, 1.0)  # what the server does after a ProtocolError
    # Whatever the broker does (run the job again elsewhere, or keep the
    # result), the client must get a result for job 1.
    worker(state, W2, now=2.0)
    out += state.on_message(W2, Credit(1), 2.0)
    for gid in job_ids(out, W2):
        out += state.on_message(W2, Results([[gid, True, 1]]), 3.0)
    assert [e[0] for c, m in out if c == C1 and isinstance(m, Results) for e in m.results] == [1]


def test_fair_share_counts_only_workers_that_serve_the_task(state):
    """The share used to be computed over every ready job and every worker
    with credit, so jobs only one worker can run were held back from it."""
    client(state, C1, "s")
    worker(state, W1, ["a"])
    worker(state, W2, ["b"])
    state.on_message(W1, Credit(10), 0.0)
    state.on_message(W2, Credit(10), 0.0)
    out = state.on_message(C1, Submit(1, [job(i, "a") for i in range(1, 5)]), 1.0)
    # W2 cannot take any of them; holding them back from W1 helps nobody.
    assert sorted(job_ids(out, W1)) == [1, 2, 3, 4]


def test_job_options_are_accepted_and_reach_the_worker(state):
    """Job entries may carry a sixth element, `options` (protocol/messages.py)."""
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(2), 0.0)
    options = {"timeout": 2.5, "retries": 1}
    out = state.on_message(C1, Submit(1, [[1, "square", [3], {}, False, options], [2, "square", [4], {}, False]]), 0.0)
    assert out[0] == (C1, Accepted(1, 2))
    assert out[1] == (W1, Jobs([[1, "square", [3], {}, False, options], [2, "square", [4], {}, False]]))


# -- started notices ----------------------------------------------------------------


def started_ids(out: list, conn: int) -> list[int]:
    from sockpool.protocol import Started

    return [i for c, m in out if c == conn and isinstance(m, Started) for i in m.ids]


def test_a_client_that_asked_hears_when_its_jobs_go_to_a_worker(state):
    state.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="s1", started=True), "h:1", 0.0)
    client(state, C2, "s2")  # did not ask
    worker(state, W1, processes=1)
    out = state.on_submit(state.clients[C1], Submit(1, [job(1), job(2), job(3)]))
    out += state.on_submit(state.clients[C2], Submit(1, [job(1)]))
    assert started_ids(out, C1) == [] and started_ids(out, C2) == []  # no credit yet
    out = state.on_message(W1, Credit(3), now=1.0)
    # The two sessions take turns (fair share): s1's 1, s2's job (gid 4), s1's 2.
    assert job_ids(out, W1) == [1, 4, 2]
    # One message for the whole dispatch round, with the client's own ids.
    assert [m.ids for c, m in out if c == C1 and m.type == "started"] == [[1, 2]]
    out = state.on_message(W1, Results([[1, True, 1], [4, True, 1]], credit=2), now=2.0)
    assert job_ids(out, W1) == [3] and started_ids(out, C1) == [3] and started_ids(out, C2) == []


def test_a_reconnecting_client_hears_which_of_its_jobs_workers_hold(state):
    state.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="s1", started=True), "h:1", 0.0)
    worker(state, W1, processes=1)
    state.on_message(W1, Credit(1), now=0.5)
    state.on_submit(state.clients[C1], Submit(1, [job(7), job(8)]))
    state.on_disconnect(C1, now=1.0)
    out = state.on_hello(C2, Hello(PROTOCOL_VERSION, "client", session="s1", started=True), "h:2", 2.0)
    assert started_ids(out, C2) == [7]


def test_jobs_restored_after_a_restart_notify_once_their_client_asks_again(state):
    from sockpool.broker.records import Job

    state.restore([Job(5, "s1", 1, "square", [3], {}, False)], [], [], now=0.0)
    worker(state, W1, processes=1)
    state.on_hello(C1, Hello(PROTOCOL_VERSION, "client", session="s1", started=True), "h:1", 1.0)
    out = state.on_message(W1, Credit(1), now=2.0)
    assert job_ids(out, W1) == [5] and started_ids(out, C1) == [1]


def test_broker_chosen_session_ids_come_from_secrets_not_the_state_rng():
    """The rng is seeded in tests and predictable in production (a Mersenne
    Twister): two brokers with the same rng must still hand out unrelated IDs."""
    import random

    a, b = BrokerState("b1", MAX, rng=random.Random(7)), BrokerState("b1", MAX, rng=random.Random(7))
    [(_, wa)] = client(a, C1)
    [(_, wb)] = client(b, C1)
    assert wa.session != wb.session
    assert len(wa.session) >= 32 and int(wa.session, 16) >= 0  # 128 bits, hex


# -- a worker asked to stop ----------------------------------------------------------


@pytest.mark.parametrize("drained", [True, False])
def test_jobs_a_draining_worker_leaves_behind_go_back_uncharged(state, drained):
    client(state, C1, "s")
    worker(state, W1, ["square"], processes=2)
    state.on_message(W1, Credit(2), 0.0)
    state.on_message(C1, Submit(1, [job(1), job(2)]), 0.0)
    state.on_message(W1, Ping(running=[1]), 1.0)  # job 1 is running, job 2 prefetched
    if drained:
        state.on_message(W1, Drain(), 1.0)
    state.on_disconnect(W1, 2.0)
    assert sorted(j.gid for j in state.dispatcher.jobs()) == [1, 2]
    # Stopped on request, nothing is charged; lost, the running job is.
    assert {g: state.jobs[g].attempts for g in (1, 2)} == ({1: 0, 2: 0} if drained else {1: 1, 2: 0})
    assert {g: state.jobs[g].requeues for g in (1, 2)} == ({1: 0, 2: 0} if drained else {1: 1, 2: 1})


# -- results nobody can collect ----------------------------------------------------------


def run_one(state, cid: int, options: dict | None, now: float, ok: bool = True) -> list:
    """Submit one job from C1, run it on W1; the broker's replies to the result."""
    entry = job(cid) + ([options] if options else [])
    out = state.on_message(C1, Submit(cid, [entry]), now)
    [gid] = [e[0] for _, m in out if isinstance(m, Jobs) for e in m.jobs]
    return state.on_message(W1, Results([[gid, ok, cid * cid if ok else {"type": "E", "message": "m"}]], 1), now)


def test_fire_and_forget_keeps_no_result_only_a_failure_record(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    state.take_journal()
    assert failures(run_one(state, 1, {"result": "none"}, 1.0)) == []
    assert failures(run_one(state, 2, {"result": "none"}, 2.0, ok=False)) == []
    session = state.sessions["s"]
    assert session.results == {} and session.live == {}
    assert [f.gid for f in state.failed] == [2]  # listed by `broker failed`
    forgotten = [gid for op in state.take_journal() if op[0] == "forget" for gid in op[1]]
    assert forgotten == [1, 2]  # the store keeps no row of either
    assert state.status(3.0)["results_kept"] == 0


def test_results_of_a_session_gone_past_the_grace_are_dropped_unless_detached(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    run_one(state, 1, None, 1.0)
    run_one(state, 2, {"result": "detached"}, 1.0)
    # Two more wait for credit while the client goes away.
    state.on_message(C1, Submit(3, [job(3), job(4) + [{"result": "detached"}]]), 2.0)
    state.on_disconnect(C1, 10.0)
    state.tick(10.0 + 299.0)
    assert sorted(state.sessions["s"].results) == [1, 2]  # within the grace: still deliverable
    state.take_journal()
    state.tick(10.0 + 300.0 + 60.0)  # checked at least once a minute
    assert sorted(state.sessions["s"].results) == [2]
    assert [op for op in state.take_journal() if op[0] == "forget"] == [("forget", [1])]
    # Its jobs that finish later keep nothing either, detached ones excepted.
    out = state.on_message(W1, Credit(2), 400.0)
    gids = [e[0] for _, m in out if isinstance(m, Jobs) for e in m.jobs]
    state.on_message(W1, Results([[gid, True, 0] for gid in gids]), 401.0)
    assert sorted(state.sessions["s"].results) == [2, 4]
    assert state.status(402.0)["results_kept"] == 2


def test_a_session_that_comes_back_in_the_grace_gets_everything(state):
    client(state, C1, "s")
    worker(state, W1)
    state.on_message(W1, Credit(1), 0.0)
    run_one(state, 1, None, 1.0)
    state.on_disconnect(C1, 10.0)
    state.tick(100.0)
    out = client(state, C2, "s", now=200.0)
    assert any(isinstance(m, Results) and m.results[0][0] == 1 for _, m in out)
    state.on_disconnect(C2, 210.0)
    state.tick(210.0 + 299.0)
    assert 1 in state.sessions["s"].results  # the grace starts again at each departure


def test_broker_chosen_session_ids_come_from_secrets_not_the_state_rng():
    """The rng is seeded in tests and predictable in production (a Mersenne
    Twister): two brokers with the same rng must still hand out unrelated IDs."""
    import random

    a, b = BrokerState("b1", MAX, rng=random.Random(7)), BrokerState("b1", MAX, rng=random.Random(7))
    [(_, wa)] = client(a, C1)
    [(_, wb)] = client(b, C1)
    assert wa.session != wb.session
    assert len(wa.session) >= 32 and int(wa.session, 16) >= 0  # 128 bits, hex
