"""Large job bodies in files beside SQLite (broker/store/blobs.py): each
state a kill -9 can leave between the steps of a write or a finish, built
on a real filesystem with the real store, then the store opened again as
a restarted broker would. No accepted job without its bytes, no file kept
forever."""

from __future__ import annotations

import os
import shutil

import msgpack
import pytest

from sockpool.broker.records import Job
from sockpool.broker.store.blobs import BLOB_FILE_BYTES, BlobFiles, BlobMissing, write_all
from sockpool.broker.store.sqlite import SqliteStore

LARGE = os.urandom(BLOB_FILE_BYTES + 1000)


def job(gid: int, data: bytes = LARGE) -> Job:
    return Job(gid, "s1", gid, "tests.tasks:digest", [data], {}, False, {}, 0)


def commit(data_dir, *journal) -> None:
    """Write `journal` and close: what the store holds after it committed."""
    store = SqliteStore(data_dir)
    store.write(list(journal))
    store.close()


def reopen(data_dir):
    """What a restarted broker finds: the files left and the jobs restored."""
    store = SqliteStore(data_dir)
    try:
        snapshot = store.restore()
        return sorted(p.name for p in (data_dir / "blobs").iterdir()), {j.gid: j.values()[0] for j in snapshot.jobs}
    finally:
        store.close()


def test_a_large_body_goes_to_a_file_and_comes_back_from_it(tmp_path):
    commit(tmp_path, ("add", job(1)), ("add", job(2, b"small")))
    files, jobs = reopen(tmp_path)
    assert files == ["1"]
    assert jobs == {1: [LARGE], 2: [b"small"]}
    assert (tmp_path / "blobs" / "1").stat().st_mode & 0o777 == 0o600


def test_killed_while_writing_the_file_leaves_nothing(tmp_path):
    commit(tmp_path, ("add", job(1)))
    # The kill came mid-write of job 2's file: a .part, and no row.
    (tmp_path / "blobs" / "2.part").write_bytes(LARGE[:1000])
    assert reopen(tmp_path) == (["1"], {1: [LARGE]})


def test_killed_after_the_rename_before_the_commit_leaves_no_orphan(tmp_path):
    commit(tmp_path, ("add", job(1)))
    BlobFiles(tmp_path / "blobs").write(2, b"\x94" + LARGE)  # its row never committed
    assert reopen(tmp_path) == (["1"], {1: [LARGE]})


def test_killed_after_the_finish_committed_before_the_removal(tmp_path):
    commit(tmp_path, ("add", job(1)), ("add", job(2)))
    kept = tmp_path / "kept"
    shutil.copy(tmp_path / "blobs" / "1", kept)
    commit(tmp_path, ("finish", 1, True, "digest", 10.0), ("forget", [2]))
    assert sorted(os.listdir(tmp_path / "blobs")) == []
    # As if the kill came between the commit and the removal.
    shutil.copy(kept, tmp_path / "blobs" / "1")
    shutil.copy(kept, tmp_path / "blobs" / "2")
    assert reopen(tmp_path) == ([], {})


def test_a_job_finished_in_the_flush_that_adds_it_writes_no_file(tmp_path):
    commit(tmp_path, ("add", job(1)), ("finish", 1, True, "digest", 10.0))
    assert reopen(tmp_path) == ([], {})


def test_a_small_body_replacing_a_large_one_takes_its_file_away(tmp_path):
    commit(tmp_path, ("add", job(1)))
    commit(tmp_path, ("add", job(1, b"small")))
    assert reopen(tmp_path) == ([], {1: [b"small"]})


def test_a_failed_commit_keeps_no_file_it_made_and_every_file_it_did_not(tmp_path):
    commit(tmp_path, ("add", job(1)))
    store = SqliteStore(tmp_path)
    try:
        with pytest.raises(Exception):
            # A value msgpack cannot pack fails the transaction after the files were written.
            store._commit([("add", job(1)), ("add", job(2)), ("finish", 3, True, object(), 1.0)])
    finally:
        store.close()
    assert reopen(tmp_path) == (["1"], {1: [LARGE]})


def test_a_missing_file_is_said_clearly(tmp_path):
    commit(tmp_path, ("add", job(1)))
    (tmp_path / "blobs" / "1").unlink()
    store = SqliteStore(tmp_path)
    try:
        with pytest.raises(BlobMissing, match="job 1"):
            store.restore()
    finally:
        store.close()


def test_a_large_body_is_written_from_its_pieces_as_packb_would_write_it(tmp_path):
    other = os.urandom(BLOB_FILE_BYTES * 2)
    big = Job(1, "s1", 1, "tests.tasks:digest", [LARGE, "small", other], {"k": other}, False, {"retries": 1}, 0)
    commit(tmp_path, ("add", big))
    expected = msgpack.packb([[LARGE, "small", other], {"k": other}, False, {"retries": 1}], use_bin_type=True)
    assert (tmp_path / "blobs" / "1").read_bytes() == expected
    assert reopen(tmp_path) == (["1"], {1: [LARGE, "small", other]})


@pytest.mark.parametrize("most", [13, 1000, 1 << 30])
def test_every_piece_is_written_in_order_however_little_each_writev_takes(tmp_path, most):
    # More pieces than one writev takes, some empty, and writes cut short
    # anywhere (as a signal can cut them): the file is the pieces joined.
    pieces = [os.urandom(n % 97) for n in range(1500)] + [os.urandom(5000)]
    calls = []

    def short_writev(fd: int, views: list[memoryview]) -> int:
        calls.append(len(views))
        taken, room = [], most
        for view in views:
            taken.append(view[:room])
            room -= len(taken[-1])
            if not room:
                break
        return os.writev(fd, taken)

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_all(fd, pieces, short_writev)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)
    assert max(calls) <= 512
