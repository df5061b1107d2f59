"""The journal as rows, shared by every store backend (broker/store/base.py),
and broker address lists (several brokers on one store)."""

from __future__ import annotations

import itertools

import pytest

from sockpool.broker.records import FailedJob, Job
from sockpool.broker.store.rows import rows_for, snapshot_from_rows
from sockpool.net.connection import split_addresses


def job(gid: int, cid: int = 1) -> Job:
    return Job(gid, "s1", cid, "tests.tasks:add", [1, 2], {}, False, {}, 0)


def test_a_job_forgotten_within_the_flush_writes_no_row():
    rows = rows_for([
        ("add", job(1)), ("add", job(2, 2)), ("attempts", 1, 1), ("finish", 1, True, 3, 10.0), ("forget", [1]),
    ])
    assert [r[0] for r in rows.add] == [2]
    assert rows.attempts == [] and rows.finish == []
    assert rows.forget == [(1,)]


def test_rows_read_back_as_the_snapshot_they_came_from():
    rows = rows_for([
        ("add", job(1)), ("add", job(2, 2)), ("finish", 2, False, {"error": "E"}, 5.0),
        ("failed", FailedJob(2, "tests.tasks:add", [1, 2], {}, {"error": "E"}, 1, 5.0)),
    ])
    # What a database gives back: the add columns, then the finish columns
    # merged in, as the UPDATE would.
    finished = {gid: (ok, result, at) for ok, result, at, gid in rows.finish}
    job_rows = [(*add[:6], *finished.get(add[0], (None, None, None)), *add[6:]) for add in rows.add]
    snapshot = snapshot_from_rows(job_rows, rows.failed)
    assert [(j.gid, j.cid, j.args) for j in snapshot.jobs] == [(1, 1, [1, 2])]
    assert [(session, r.gid, r.entry) for session, r in snapshot.results] == [("s1", 2, [2, False, {"error": "E"}])]
    assert [(f.gid, f.error, f.attempts) for f in snapshot.failed] == [(2, {"error": "E"}, 1)]


def test_expiry_is_kept_in_order():
    assert rows_for([("expire", 5.0), ("expire", 6.0)]).expire == [5.0, 6.0]


@pytest.mark.parametrize(
    "address,split",
    [
        ("b1:7341,b2:7341", ["b1:7341", "b2:7341"]),
        (" b1:7341 , b2:7341 ,", ["b1:7341", "b2:7341"]),
        ("b1:7341", ["b1:7341"]),
        ("[::1]:9000,[::1]:9001", ["[::1]:9000", "[::1]:9001"]),
    ],
)
def test_split_addresses(address, split):
    assert split_addresses(address) == split


def test_address_list_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOCKPOOL_BROKER", "a:1,b:2")
    assert split_addresses(None) == ["a:1", "b:2"]
    monkeypatch.delenv("SOCKPOOL_BROKER")
    assert split_addresses(None) == [None]


def test_an_empty_list_is_an_error():
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_addresses(",")


def test_a_job_finished_within_the_flush_is_written_without_its_arguments():
    still_running = job(2, 2)
    rows = rows_for([("add", job(1)), ("add", still_running), ("finish", 1, True, 3, 10.0)])
    assert [(r[0], r[4]) for r in rows.add] == [(1, b""), (2, still_running.stored_body())]
    assert rows.finish == [(1, b"\x03", 10.0, 1)]
    # The row the database holds after the INSERT and the UPDATE reads back finished.
    job_rows = [(*add[:6], *((1, b"\x03", 10.0) if add[0] == 1 else (None, None, None)), *add[6:]) for add in rows.add]
    snapshot = snapshot_from_rows(job_rows, [])
    assert [(j.gid, j.args) for j in snapshot.jobs] == [(2, [1, 2])]
    assert [(r.gid, r.entry) for _, r in snapshot.results] == [(1, [1, True, 3])]


def test_a_stored_body_packed_with_the_writers_packer_is_the_same_bytes():
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)
    assert job(1).stored_body(packer.pack) == job(1).stored_body() == msgpack.packb([[1, 2], {}, False, None])


@pytest.mark.parametrize(
    "gids,runs",
    [
        ([], []),
        ([4], [[4, 4]]),
        ([5, 1, 2, 3, 7, 8, 3], [[1, 3], [5, 5], [7, 8]]),
        ([10, 12, 14], [[10, 10], [12, 12], [14, 14]]),
    ],
)
def test_deletes_go_as_runs_of_consecutive_ids(gids, runs):
    from sockpool.broker.store.sqlite import gid_runs

    assert gid_runs([(gid,) for gid in gids]) == runs


def test_a_backend_that_asks_gets_jobs_finished_within_the_flush_as_finished_rows():
    journal = [("add", job(1)), ("add", job(2, 2)), ("finish", 1, True, 3, 10.0), ("finish", 3, False, "E", 11.0)]
    rows = rows_for(journal, finished_adds=True)
    assert [r[0] for r in rows.add] == [2]
    assert rows.add_finished == [(1, "s1", 1, "tests.tasks:add", b"", 0, 0, None, 1, b"\x03", 10.0)]
    assert rows.finish == [(0, b"\xa1E", 11.0, 3)]  # added in an earlier flush: updated
    assert [r[3] for r in rows.finish_followers] == [1, 3]


def test_finishes_make_no_follower_rows_when_no_follower_is_stored():
    journal = [("add", job(1)), ("finish", 1, True, 3, 10.0), ("forget", [1])]
    assert rows_for(journal, followers_stored=False).finish_followers == []
    assert [r[3] for r in rows_for(journal).finish_followers] == [1]
    # A follower joining within the flush counts as stored.
    followed = rows_for([("follow", "s2", 7, 1), *journal], followers_stored=False)
    assert [r[3] for r in followed.finish_followers] == [1]


def test_statements_cover_every_row_in_a_few_shapes():
    """A flush's rows go in statements of power-of-two sizes: every row once,
    in order, and few distinct statements for sqlite3 to keep prepared."""
    from sockpool.broker.store.sqlite import statement_runs

    shapes = set()
    for rows in range(0, 1200):
        runs = list(statement_runs(rows, 199))
        assert [start for start, _ in runs] == list(itertools.accumulate([0] + [n for _, n in runs[:-1]]))[: len(runs)]
        assert sum(count for _, count in runs) == rows
        shapes |= {count for _, count in runs}
    assert shapes == {1, 2, 4, 8, 16, 32, 64, 128}
