"""The SQLite store on a real file: what a flush writes is what a restart reads.

No broker: the store's `_commit` is given journals as the state writes
them, and a second store on the same directory restores them.
"""

from __future__ import annotations

import pytest

from sockpool.broker.records import Job
from sockpool.broker.store.sqlite import SqliteStore


def job(gid: int) -> Job:
    return Job(gid, "s1", gid, "tests.tasks:add", [gid, 1], {}, False)


def restored(path) -> tuple[list[int], dict[int, list]]:
    store = SqliteStore(path)
    try:
        snapshot = store.restore()
    finally:
        store.close()
    return [j.gid for j in snapshot.jobs], {r.gid: r.entry for _, r in snapshot.results}


def test_acknowledged_ranges_delete_exactly_those_jobs(tmp_path):
    store = SqliteStore(tmp_path)
    try:
        store._commit([("add", job(gid)) for gid in range(1, 9)])
        store._commit([("finish", gid, True, gid * 10, 5.0) for gid in (1, 2, 3, 5, 6, 7)])
        # Acknowledged out of order, with gaps: 4 still runs, 7 and 8 are not acknowledged.
        store._commit([("forget", [6, 2, 1]), ("forget", [3, 5])])
    finally:
        store.close()
    jobs, results = restored(tmp_path)
    assert jobs == [4, 8]
    assert results == {7: [7, True, 70]}


def test_a_job_finished_within_its_flush_restores_as_finished(tmp_path):
    store = SqliteStore(tmp_path)
    try:
        store._commit([("add", job(1)), ("add", job(2)), ("finish", 1, True, 11, 5.0)])
    finally:
        store.close()
    jobs, results = restored(tmp_path)
    assert jobs == [2]
    assert results == {1: [1, True, 11]}


def test_jobs_with_and_without_attempts_detached_results_and_keys_read_back_as_written(tmp_path):
    plain = job(1)
    detached = Job(2, "s1", 2, "tests.tasks:add", [2, 1], {}, False, {"result": "detached", "key": "k2"})
    retried = Job(3, "s1", 3, "tests.tasks:add", [3, 1], {}, False, attempts=2)
    store = SqliteStore(tmp_path)
    try:
        store._commit([("add", plain), ("add", detached), ("add", retried)])
        store._commit([("finish", 2, True, 20, 5.0)])
        rows = store._db.execute("SELECT gid, attempts, detached, key, ok FROM jobs ORDER BY gid").fetchall()
    finally:
        store.close()
    assert rows == [(1, 0, 0, None, None), (2, 0, 1, "k2", 1), (3, 2, 0, None, None)]
    jobs, results = restored(tmp_path)
    assert jobs == [1, 3]
    assert results == {2: [2, True, 20]}


def test_more_jobs_in_a_flush_than_one_statement_binds_are_all_written(tmp_path):
    from sockpool.broker.store.sqlite import MAX_BOUND_VALUES

    count = MAX_BOUND_VALUES  # several statements of 5 values a row, the last one short
    store = SqliteStore(tmp_path)
    try:
        store._commit([("add", job(gid)) for gid in range(1, count + 1)])
        store._commit([("add", job(count + 1)), ("finish", count + 1, True, 0, 5.0), ("finish", 7, True, 70, 5.0)])
    finally:
        store.close()
    jobs, results = restored(tmp_path)
    assert jobs == [gid for gid in range(1, count + 1) if gid != 7]
    assert results == {7: [7, True, 70], count + 1: [count + 1, True, 0]}


@pytest.mark.parametrize("many", [True, False])
def test_finishes_of_jobs_from_earlier_flushes_are_all_written(tmp_path, many):
    """Many finishes per statement (UPDATE ... FROM, SQLite 3.33+) or one per
    row (older SQLite): the same rows."""
    import sqlite3

    from sockpool.broker.store.sqlite import UPDATE_FROM, update_finished

    if many and not UPDATE_FROM:
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no UPDATE ... FROM")
    store = SqliteStore(tmp_path)
    try:
        store._commit([("add", job(gid)) for gid in range(1, 601)])
        db = store._db
        db.execute("BEGIN")
        # Several statements' worth, the last one short; 5 twice, the last one wins;
        # every 50th result too large for UPDATE ... FROM (written one by one).
        finishes = [(1, store_pack("x" * 2000 if gid % 50 == 0 else gid * 10), 5.0, gid) for gid in range(1, 600)]
        update_finished(db, finishes + [(0, store_pack("E"), 6.0, 5)], many)
        db.execute("COMMIT")
    finally:
        store.close()
    jobs, results = restored(tmp_path)
    assert jobs == [600]
    assert len(results) == 599 and results[599] == [599, True, 5990] and results[5] == [5, False, "E"]
    assert results[550] == [550, True, "x" * 2000]


def store_pack(value):
    import msgpack

    return msgpack.packb(value, use_bin_type=True)
