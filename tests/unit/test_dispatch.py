"""broker/dispatch.py: which ready job a worker gets, rule by rule, driven by `now`.

No sockets, no sleeps. Jobs are built directly; `take` is asked the way
the broker asks it for a worker with room.
"""

from __future__ import annotations

import itertools

from sockpool.broker.dispatch import PRIORITY_AGING_S, Dispatcher, DueJobs
from sockpool.broker.records import Job

ALL = frozenset({"square", "cube"})
_gids = itertools.count(1)


def make(session: str = "s1", task: str = "square", queue: str | None = None, priority: int = 0, **extra) -> Job:
    options = {**({"queue": queue} if queue else {}), **({"priority": priority} if priority else {}), **extra}
    gid = next(_gids)
    return Job(gid, session, gid, task, [gid], {}, False, options or None)


def fill(d: Dispatcher, jobs: list[Job], now: float = 0.0) -> list[Job]:
    for job in jobs:
        d.add(job, now)
    return jobs


def gids(jobs: list[Job]) -> list[int]:
    return [j.gid for j in jobs]


# -- rule 1: queues -------------------------------------------------------------


def test_a_worker_takes_only_from_its_queues():
    d = Dispatcher()
    gpu = fill(d, [make(queue="gpu") for _ in range(3)])
    default = fill(d, [make() for _ in range(3)])
    assert gids(d.take(["default"], ALL, 10, 0.0)) == gids(default)
    assert gids(d.take(["default"], ALL, 10, 0.0)) == []
    assert gids(d.take(["gpu"], ALL, 10, 0.0)) == gids(gpu)
    assert d.count == 0 and not d.queues


def test_queue_preference_is_strict_order():
    d = Dispatcher()
    low = fill(d, [make(queue="batch") for _ in range(3)])
    high = fill(d, [make(queue="gpu") for _ in range(2)])
    # gpu first, then what is left of the limit from batch
    assert gids(d.take(["gpu", "batch"], ALL, 3, 0.0)) == gids(high) + gids(low[:1])


def test_a_worker_takes_only_tasks_it_serves():
    d = Dispatcher()
    cubes = fill(d, [make(task="cube") for _ in range(2)])
    squares = fill(d, [make(task="square") for _ in range(2)])
    assert gids(d.take(["default"], frozenset({"square"}), 10, 0.0)) == gids(squares)
    assert d.waiting_for(["default"], frozenset({"square"})) == 0
    assert d.waiting_for(["default"], frozenset({"cube"})) == 2
    assert gids(d.take(["default"], ALL, 10, 0.0)) == gids(cubes)


# -- rule 2: priority -------------------------------------------------------------


def test_higher_priority_first_fifo_among_equals():
    d = Dispatcher()
    low = fill(d, [make() for _ in range(1000)])
    mid = fill(d, [make(priority=3) for _ in range(2)])
    top = fill(d, [make(priority=9)])
    neg = fill(d, [make(priority=-5)])
    assert gids(d.take(["default"], ALL, 4, 0.0)) == gids(top + mid + low[:1])
    rest = d.take(["default"], ALL, 10_000, 0.0)
    assert gids(rest) == gids(low[1:] + neg)


def test_a_high_priority_job_behind_a_deep_queue_is_next():
    d = Dispatcher()
    fill(d, [make(session=f"s{i % 7}") for i in range(100_000)])
    urgent = make(session="late", priority=1)
    d.add(urgent, 0.0)
    assert gids(d.take(["default"], ALL, 1, 0.0)) == [urgent.gid]


# -- rule 3 and 4: fair share between sessions, FIFO within one ------------------


def test_sessions_take_turns_round_robin():
    d = Dispatcher()
    big = fill(d, [make(session="big") for _ in range(1000)])
    small = fill(d, [make(session="small") for _ in range(2)])
    first = d.take(["default"], ALL, 4, 0.0)
    assert gids(first) == [big[0].gid, small[0].gid, big[1].gid, small[1].gid]


def test_a_new_sessions_first_job_goes_within_one_turn():
    d = Dispatcher()
    big = fill(d, [make(session="big") for _ in range(1000)])
    assert gids(d.take(["default"], ALL, 1, 0.0)) == [big[0].gid]
    late = make(session="late")
    d.add(late, 0.0)
    # "big" was served last, so the newcomer is next whatever "big" has queued
    taken = d.take(["default"], ALL, 2, 0.0)
    assert late.gid in gids(taken)


def test_one_session_stays_fifo():
    d = Dispatcher()
    mine = fill(d, [make(session="me") for _ in range(50)])
    fill(d, [make(session="other") for _ in range(50)])
    taken = [j for j in d.take(["default"], ALL, 100, 0.0) if j.session == "me"]
    assert gids(taken) == gids(mine)


def test_a_released_job_goes_back_to_the_front_of_its_line():
    d = Dispatcher()
    jobs = fill(d, [make() for _ in range(3)])
    [first] = d.take(["default"], ALL, 1, 0.0)
    d.add(first, 1.0, front=True)
    assert gids(d.take(["default"], ALL, 3, 1.0)) == gids(jobs)


# -- rule 5: no starvation -------------------------------------------------------------


def test_a_starved_priority_gets_a_job_after_the_aging_time():
    d = Dispatcher()
    low = fill(d, [make(priority=0) for _ in range(3)], now=0.0)
    now = 0.0
    # A stream of high-priority jobs that would keep the low ones waiting for ever.
    for _ in range(10):
        d.add(make(priority=5), now)
        [got] = d.take(["default"], ALL, 1, now)
        assert got.priority == 5
        now += PRIORITY_AGING_S / 10
    now = PRIORITY_AGING_S
    d.add(make(priority=5), now)
    [got] = d.take(["default"], ALL, 1, now)
    assert got.gid == low[0].gid  # waited PRIORITY_AGING_S: its turn
    [got] = d.take(["default"], ALL, 1, now)
    assert got.priority == 5  # and back to priority order


# -- rule 6: pause -----------------------------------------------------------------------


def test_a_paused_queue_keeps_its_jobs_and_hands_out_none():
    d = Dispatcher()
    jobs = fill(d, [make(queue="gpu") for _ in range(2)])
    d.pause("gpu")
    assert d.take(["gpu"], ALL, 10, 0.0) == []
    assert d.waiting_for(["gpu"], ALL) == 0
    d.add(make(queue="gpu"), 0.0)  # still accepts
    assert d.queues["gpu"].count == 3
    d.resume("gpu")
    assert gids(d.take(["gpu"], ALL, 2, 0.0)) == gids(jobs)


# -- rule 7: the admission seam ------------------------------------------------------------


def test_admission_refusal_leaves_the_job_first_in_its_line():
    refused: set[int] = set()
    d = Dispatcher(admit=lambda job: job.gid not in refused)
    a = fill(d, [make(session="a") for _ in range(2)])
    b = fill(d, [make(session="b")])
    refused.add(a[0].gid)
    assert gids(d.take(["default"], ALL, 10, 0.0)) == gids(b)
    refused.clear()
    assert gids(d.take(["default"], ALL, 10, 0.0)) == gids(a)


def test_remove_takes_a_ready_job_out():
    d = Dispatcher()
    jobs = fill(d, [make(), make(session="x")])
    assert d.remove(jobs[1]) and not d.remove(jobs[1])
    assert gids(d.take(["default"], ALL, 10, 0.0)) == gids(jobs[:1])
    assert d.count == 0


# -- due times -------------------------------------------------------------------------------


def test_due_jobs_come_out_at_their_time_in_order():
    due = DueJobs()
    late, early, same = make(), make(), make()
    due.push(late, 30.0)
    due.push(early, 10.0)
    due.push(same, 10.0)
    assert due.next_due() == 10.0
    assert due.pop_due(9.999) == []
    assert gids(due.pop_due(10.0)) == gids([early, same])
    assert due.next_due() == 30.0 and len(due) == 1
    assert gids(due.pop_due(1e12)) == [late.gid]
    assert due.next_due() is None


def test_a_job_due_in_a_month_is_one_entry():
    due = DueJobs()
    job = make()
    due.push(job, 30 * 86400.0)
    assert len(due) == 1 and due.pop_due(30 * 86400.0 - 1) == []
    assert due.pop_due(30 * 86400.0) == [job]


def test_a_waiting_job_can_be_taken_out():
    due = DueJobs()
    jobs = [make(queue="gpu") for _ in range(5)]
    for i, job in enumerate(jobs):
        due.push(job, 10.0 + i)
    assert due.remove(jobs[2]) and not due.remove(jobs[2])
    assert due.remove(jobs[4])
    assert gids(due.pop_due(100.0)) == gids([jobs[0], jobs[1], jobs[3]])
    assert due.calls == 0 and due.calls_by_queue == {}
