"""A full disk, for real: a tmpfs of a few MiB that the test mounts (as root).

`accepted` means on disk even then: what the store could not write stays
queued and is written once space returns, submissions meanwhile get a clear
"broker cannot store jobs: disk full", and after a kill -9 every job that was
acknowledged still completes.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from sockpool.broker.records import Job
from sockpool.broker.store import Store, StoreTrouble
from sockpool.client import BrokerRefused, Client, JobFailed

from .cluster import run_module, run_submit, start_broker, start_worker
from .test_durability import free_port, wait_until

WAIT_S = 30
DISK_MIB = 6


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MIB MiB mounted for this test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Take up the disk's free space but `leave_bytes`, with a file we can delete."""
    filler = disk / f"filler-{time.monotonic_ns()}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    block = b"\0" * (64 << 10)
    try:
        while True:
            stat = os.statvfs(disk)
            room = stat.f_bavail * stat.f_frsize - leave_bytes
            if leave_bytes and room <= 0:
                break
            os.write(fd, block[: max(4096, min(len(block), room))] if leave_bytes else block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def job(gid: int, size: int = 1000) -> Job:
    return Job(gid, "s1", gid, "tests.tasks:pid", ["x" * size], {}, False)


class Health:
    """What the store says about itself, as the broker hears it."""

    def __init__(self) -> None:
        self.events: list[StoreTrouble | None] = []
        self.changed = threading.Event()

    def __call__(self, trouble: StoreTrouble | None) -> None:
        self.events.append(trouble)
        self.changed.set()


def test_enospc_in_a_group_commit_of_finishes_and_acks_loses_none_of_them(small_disk):
    data = small_disk / "data"
    store = Store(data)
    health = Health()
    store.start(on_health=health)
    written = threading.Event()
    store.write([("add", job(1)), ("add", job(2)), ("add", job(3))], written.set)
    assert written.wait(WAIT_S)

    filler = fill(small_disk)
    # One group commit: job 1 finishes with a result larger than the free
    # space, job 2 finishes and its result is acknowledged, a new job 4 is
    # submitted (its `accepted` must wait for the disk).
    committed = threading.Event()
    store.write([("finish", 1, True, "r" * (1 << 20), 100.0), ("finish", 2, True, "two", 100.0),
                 ("forget", [2]), ("add", job(4))], committed.set)
    wait_until(lambda: health.events, WAIT_S, "the store to report trouble")
    assert health.events[0] is not None and health.events[0].disk_full
    assert health.events[0].reason == "disk full"
    assert not committed.is_set(), "acknowledged before it was on disk"
    # Later writes queue behind the unwritten ones and are not acknowledged
    # either: nor is the empty write of a job sent again after a reconnect,
    # which the broker holds in memory only (the report's lost jobs).
    later, resent = threading.Event(), threading.Event()
    store.write([("attempts", 3, 1)], later.set)
    store.write([], resent.set)
    time.sleep(0.5)  # a few retries' worth: they must all fail while the disk is full
    assert not committed.is_set() and not later.is_set() and not resent.is_set()
    assert store._thread.is_alive()

    filler.unlink()  # space comes back: the writer resumes by itself
    assert committed.wait(WAIT_S) and later.wait(WAIT_S) and resent.wait(WAIT_S)
    assert health.events[-1] is None
    store.close()

    again = Store(data)
    snapshot = again.restore()
    jobs, results = snapshot.jobs, snapshot.results
    again.close()
    assert sorted((j.gid, j.attempts) for j in jobs) == [(3, 1), (4, 0)]
    assert [(session, r.gid, r.entry[2][:1]) for session, r in results] == [("s1", 1, "r")]


def test_a_write_that_raises_anything_never_kills_the_writer(tmp_path):
    """An integer SQLite cannot hold raises OverflowError, not sqlite3.Error:
    the writer reports it, keeps the entry, and acknowledges nothing after it."""
    store = Store(tmp_path / "data")
    health = Health()
    store.start(on_health=health)
    acknowledged = threading.Event()
    store.write([("add", Job(2**63, "s1", 1, "t", [], {}, False))], acknowledged.set)
    assert health.changed.wait(WAIT_S)
    trouble = health.events[0]
    assert trouble is not None and not trouble.disk_full and "OverflowError" in trouble.reason
    time.sleep(0.3)
    assert store._thread.is_alive() and not acknowledged.is_set()
    store.close()


def detach(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_submit("--broker", address, "--detach", "tests.tasks:pid", *args, timeout_s=WAIT_S)


@pytest.mark.slow
def test_full_disk_refuses_clearly_and_a_kill_loses_no_acknowledged_job(small_disk, tmp_path):
    port = free_port()
    data = ["--data-dir", str(small_disk / "data")]
    broker, address = start_broker(tmp_path, *data, port=port)
    worker = None
    filler = fill(small_disk, leave_bytes=2 << 20)
    arg = '"' + "x" * (48 << 10) + '"'  # 48 KiB jobs, as in the report
    accepted: list[str] = []
    try:
        refusal = None
        for _ in range(60):  # 2 MiB free: full after a handful of 8-job submissions
            done = detach(address, *[arg] * 8)
            if done.returncode != 0:
                refusal = done
                break
            accepted.append(done.stdout.strip())
        assert refusal is not None, "the disk never filled"
        assert "broker cannot store jobs: disk full" in refusal.stderr, refusal.stderr
        assert accepted, "the disk was full before any job"

        # The Python client: the future says why; the status says it too.
        with Client(address) as client:
            with pytest.raises(JobFailed) as failed:
                client.submit("tests.tasks:pid", "x" * (48 << 10)).result(WAIT_S)
            assert failed.value.remote_type == "DiskFull"
            assert "broker cannot store jobs: disk full" in str(failed.value)
            assert "disk full" in client.status()["store_refusal"]
        status = run_module("sockpool.broker", "status", "--broker", address, timeout_s=WAIT_S)
        assert "REFUSING NEW JOBS: broker cannot store jobs: disk full" in status.stdout

        broker.kill()
        filler.unlink()
        broker, address = start_broker(tmp_path, *data, port=port)
        worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
        for submission in accepted:
            done = run_submit("--broker", address, "--attach", submission, "--json", timeout_s=WAIT_S)
            assert done.returncode == 0, done.stderr
            assert len(json.loads(done.stdout)) == 8
        # Space came back: new jobs are accepted again.
        with Client(address) as client:
            assert isinstance(client.submit("tests.tasks:pid", 1).result(WAIT_S), int)
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


@pytest.mark.slow
def test_jobs_caught_in_a_failed_write_are_acknowledged_only_once_written(small_disk, tmp_path):
    """A batch the broker took in while the disk still had room, whose write
    then failed: the client is told at once (BrokerRefused from
    wait_accepted, never an endless wait), new jobs are refused, the batch's
    jobs still run and deliver their results, and when space returns the
    broker writes the batch by itself, acknowledges it and takes jobs again."""
    port = free_port()
    data = ["--data-dir", str(small_disk / "data")]
    broker, address = start_broker(tmp_path, *data, port=port)
    worker = None
    filler = fill(small_disk, leave_bytes=256 << 10)
    try:
        with Client(address) as client:
            # 800 KiB: one submit frame (SUBMIT_FRAME_BYTES), so one batch the
            # broker takes in whole before its write fails; jobs in a second
            # frame would arrive after the refusal and be refused themselves.
            futures = [client.submit("tests.tasks:pid", "x" * (200 << 10)) for _ in range(4)]
            with pytest.raises(BrokerRefused) as refused:
                client.wait_accepted(WAIT_S)
            assert refused.value.code == "DiskFull"
            assert "broker cannot store jobs: disk full" in str(refused.value)
            with pytest.raises(JobFailed, match="disk full"):
                client.submit("tests.tasks:pid", 1).result(WAIT_S)
            # Jobs run while the disk is full, and their results are delivered.
            worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
            assert all(isinstance(f.result(WAIT_S), int) for f in futures)

            filler.unlink()  # the broker resumes by itself

            def accepted() -> bool:
                try:
                    return client.wait_accepted(0.1)
                except BrokerRefused:  # still refusing: asked again below
                    return False

            wait_until(accepted, WAIT_S, "the broker to write the batch and acknowledge it")
            assert isinstance(client.submit("tests.tasks:pid", 2).result(WAIT_S), int)
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_a_full_disk_refuses_large_jobs_and_leaves_no_half_written_body_file(small_disk, tmp_path):
    """Bodies of 64 KiB or more are files of their own (broker/store/blobs.py):
    a file the disk cannot hold fails the write like the database would, no
    part of it stays behind, and every job taken in (the one caught in the
    failed write too) runs with its bytes intact once there is room again,
    leaving no file."""
    import hashlib

    data_dir = small_disk / "data"
    broker, address = start_broker(tmp_path, "--data-dir", str(data_dir))
    worker = None
    filler = fill(small_disk, leave_bytes=1 << 20)
    try:
        with Client(address) as client:
            taken, refused = [], False
            for i in range(40):  # 1 MiB free: full after a few 200 KB jobs
                payload = os.urandom(200_000 + i)
                taken.append((client.submit("tests.tasks:digest", payload), hashlib.sha256(payload).hexdigest()))
                try:
                    client.wait_accepted(WAIT_S)
                except BrokerRefused as exc:
                    assert exc.code == "DiskFull"
                    refused = True
                    break
            assert refused, "the disk never filled"
            assert len(taken) > 1, "the disk was full before any job"
            assert not [p.name for p in (data_dir / "blobs").iterdir() if p.name.endswith(".part")]
            with pytest.raises(JobFailed, match="disk full"):
                client.submit("tests.tasks:digest", b"y" * 100_000).result(WAIT_S)
            filler.unlink()  # the broker resumes by itself
            worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
            assert [f.result(WAIT_S) for f, _ in taken] == [digest for _, digest in taken]
        wait_until(lambda: list((data_dir / "blobs").iterdir()) == [], what="every body file removed")
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
