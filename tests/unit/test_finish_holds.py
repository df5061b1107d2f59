"""Finishes the store writer holds back for their acks (broker/store/holds.py),
driven by `now`; and which finishes the state lets wait (broker/outcomes.py)."""

from __future__ import annotations

from pathlib import Path

from sockpool.broker.records import Job
from sockpool.broker.store.holds import FinishHolds
from sockpool.broker.store.sqlite import SqliteStore


def job(gid: int) -> Job:
    return Job(gid, "s1", gid, "tests.tasks:add", [1, 2], {}, False)


def finish(gid: int, at: float = 10.0, may_wait: bool = True) -> tuple:
    return ("finish", gid, True, gid * 10, at, may_wait)


def flush(holds: FinishHolds, journal: list, now: float, everything: bool = False) -> list:
    """Plan a flush and adopt it, as a commit that succeeded; what it writes."""
    written, plan = holds.plan(journal, now, everything)
    holds.adopt(plan)
    return written


def test_a_finish_acknowledged_by_the_next_flush_is_never_written():
    holds = FinishHolds(hold_s=0.5)
    assert flush(holds, [finish(1), finish(2)], now=0.0) == []
    assert len(holds) == 2
    # The ack's delete is all the rows need: neither finish is written.
    assert flush(holds, [("forget", [1, 2])], now=0.1) == [("forget", [1, 2])]
    assert len(holds) == 0 and holds.next_due() is None


def test_an_unacknowledged_finish_is_written_once_it_waited_hold_s():
    holds = FinishHolds(hold_s=0.5)
    flush(holds, [finish(1)], now=0.0)
    assert holds.next_due() == 0.5
    assert flush(holds, [("add", job(7))], now=0.4)[0][0] == "add"  # not yet
    flush(holds, [finish(2)], now=0.45)
    # Due ones first, before anything newer; the younger one waits on.
    written = flush(holds, [("add", job(8))], now=0.5)
    assert len(written) == 2 and written[0] == finish(1) and written[1][0] == "add"
    assert len(holds) == 1 and holds.next_due() == 0.95
    # Written once only: its ack later is a plain delete.
    assert flush(holds, [("forget", [1])], now=0.6) == [("forget", [1])]
    assert len(holds) == 1


def test_finishes_others_read_are_written_at_once():
    holds = FinishHolds()
    failed = ("finish", 3, False, {"type": "E"}, 1.0, False)
    journal = [finish(1, may_wait=False), failed, ("finish", 4, True, 1, 1.0)]  # no flag: an older entry
    assert flush(holds, journal, now=0.0) == journal
    assert len(holds) == 0


def test_a_finish_in_the_flush_that_adds_its_job_is_not_held():
    # That job is one finished insert already (rows_for's finished_adds).
    holds = FinishHolds()
    journal = [("add", job(1)), finish(1), finish(2)]
    assert flush(holds, journal, now=0.0) == journal[:2]
    assert len(holds) == 1


def test_an_ack_in_the_same_flush_drops_the_finish():
    holds = FinishHolds()
    assert flush(holds, [finish(1), ("forget", [1])], now=0.0) == [("forget", [1])]
    assert len(holds) == 0


def test_at_most_most_are_held_and_the_rest_written_in_place():
    holds = FinishHolds(most=2)
    assert flush(holds, [finish(1), finish(2), finish(3)], now=0.0) == [finish(3)]
    assert flush(holds, [finish(4)], now=0.1) == [finish(4)]
    assert len(holds) == 2


def test_everything_writes_every_held_finish_and_holds_none():
    holds = FinishHolds()
    flush(holds, [finish(1)], now=0.0)
    assert flush(holds, [finish(2)], now=0.1, everything=True) == [finish(1), finish(2)]
    assert len(holds) == 0


def test_a_plan_not_adopted_leaves_the_holds_as_they_were():
    # A commit that failed: the same journal comes again, with the same holds.
    holds = FinishHolds(hold_s=0.5)
    flush(holds, [finish(1)], now=0.0)
    first = holds.plan([finish(2), ("forget", [1])], now=0.1)
    again = holds.plan([finish(2), ("forget", [1])], now=0.1)
    assert first == again and len(holds) == 1


def test_closing_the_store_writes_held_finishes(tmp_path: Path):
    store = SqliteStore(tmp_path)
    store.start()
    store.write([("add", job(1))])
    store.write([finish(1)])
    store.close()
    reopened = SqliteStore(tmp_path)
    snapshot = reopened.restore()
    reopened.close()
    assert snapshot.jobs == []
    assert [(session, r.gid, r.entry) for session, r in snapshot.results] == [("s1", 1, [1, True, 10])]


# -- which finishes the state lets wait ------------------------------------------


def finishes_after_running(entries: list) -> dict[int, bool]:
    """Submit `entries` from one client, run each on one worker, the first
    failing: each job's cid -> the `may_wait` of its finish entry."""
    from sockpool.broker.state import BrokerState
    from sockpool.protocol import PROTOCOL_VERSION, Credit, Hello, Jobs, Results, Submit

    state = BrokerState("b1", 1 << 20)
    state.on_hello(11, Hello(PROTOCOL_VERSION, "client", name="c", session="s1"), "h:11", 0.0)
    state.on_hello(21, Hello(PROTOCOL_VERSION, "worker", name="w", tasks=["square"], processes=9), "h:21", 0.0)
    out = state.on_message(11, Submit(1, entries), 1.0)
    out += state.on_message(21, Credit(len(entries)), 1.0)
    gids = [e[0] for _, m in out if isinstance(m, Jobs) for e in m.jobs]
    cid_of = {job.gid: job.cid for job in state.jobs.values()}
    state.take_journal()
    results = [[gid, i != 0, 4 if i else {"type": "ValueError", "message": "x"}] for i, gid in enumerate(gids)]
    out = state.on_message(21, Results(results, credit=0), 2.0)
    # Plain successes finish together (outcomes.finish_succeeded), the rest
    # one by one: each way, every outcome is kept, sent and counted once.
    sent = sorted(e[0] for _, m in out if isinstance(m, Results) for e in m.results)
    assert sent == sorted(state.sessions["s1"].results) == sorted(cid_of.values())
    assert not state.jobs and not state.sessions["s1"].live and state.quota.jobs == 0
    assert (state.stats.completed, state.stats.failed, state.totals["completed"]) == (len(entries) - 1, 1, len(entries) - 1)
    assert state.stats.tasks["square"] == [len(entries), len(entries) - 1, 1]
    return {cid_of[e[1]]: e[5] for e in state.take_journal() if e[0] == "finish"}


def test_only_successes_their_submitter_alone_reads_may_wait():
    plain = lambda cid, options=None: [cid, "square", [2], {}, False, *([options] if options else [])]  # noqa: E731
    may_wait = finishes_after_running([
        plain(1), plain(2), plain(3, {"result": "detached"}), plain(4, {"key": "k"}), plain(5, {"timeout": 9}),
        plain(6),
    ])
    # 1 failed (listed by `broker failed`), 3 is collected by another
    # process, 4's key is read by who joins it; 2 and 5 are the submitter's.
    assert may_wait == {1: False, 2: True, 3: False, 4: False, 5: True, 6: True}


def test_a_hold_of_zero_holds_nothing():
    holds = FinishHolds(hold_s=0)
    assert flush(holds, [finish(1)], now=0.0) == [finish(1)]
    assert len(holds) == 0
