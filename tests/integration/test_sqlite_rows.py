"""The SQLite store on a real file: what a flush writes is what a restart reads.

No broker: the store's `_commit` is given journals as the state writes
them, and a second store on the same directory restores them.
"""

from __future__ import annotations

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
