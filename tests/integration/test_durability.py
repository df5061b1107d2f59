"""Nothing accepted is lost: brokers and workers killed mid-run, retries, detach/attach."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sockpool.client import Client, JobFailed
from sockpool.protocol import ConnectionLost

from .cluster import run_submit, start_broker, start_worker, wait_for_processes

WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.02)


def completed(client: Client) -> int:
    """The broker's count of completed jobs; 0 while the client is still
    reconnecting to a restarted broker."""
    try:
        return client.status(WAIT_S)["totals"]["completed"]
    except ConnectionLost:
        return 0


def runs_on_disk(marker_dir: Path) -> dict[str, int]:
    return {p.name: len(p.read_text()) for p in marker_dir.iterdir()}


def test_broker_killed_mid_run_loses_nothing(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        wait_for_processes(address, 2)
        with Client(address) as client:
            futures = [client.submit("tests.tasks:slow_square", i, 0.1, str(marks)) for i in range(40)]
            wait_until(lambda: sum(f.done() for f in futures) >= 6, what="first results")
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            results = [f.result(WAIT_S) for f in futures]
        assert results == [i * i for i in range(40)]
        # Every job ran at least once; a job running when the broker died may have run twice.
        runs = runs_on_disk(marks)
        assert sorted(runs) == sorted(f"sq{i}" for i in range(40))
    finally:
        worker.stop()
        broker.stop()


def test_queued_map_chunks_survive_a_broker_killed_before_any_worker_came(tmp_path):
    """Map chunks are stored as the client packed them, and run after the
    restart exactly as if the broker had never died."""
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = None
    try:
        with Client(address) as client:
            # With no worker yet, every chunk of the map's window waits in the queue.
            results = client.map("square", range(1600), chunksize=100, timeout=WAIT_S)
            assert client.wait_accepted(WAIT_S)
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            worker = start_worker(tmp_path, address, 2)
            assert list(results) == [x * x for x in range(1600)]
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_submit_command_survives_a_broker_restart(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
    try:
        wait_for_processes(address, 2)
        done: dict[str, subprocess.CompletedProcess[str]] = {}
        args = [str(i) for i in range(30)]
        thread = threading.Thread(target=lambda: done.setdefault(
            "run", run_submit("--broker", address, "--json", "--chunksize", "1", "tests.tasks:slow_square", *args,
                              timeout_s=WAIT_S)))
        thread.start()
        # Killed once the command's jobs are in and some ran (a fixed sleep
        # could kill the broker before a slow start-up of `submit` connected).
        with Client(address) as observer:
            wait_until(lambda: observer.status(WAIT_S)["totals"]["completed"] >= 2, what="jobs under way")
        broker.kill()
        broker, address = start_broker(tmp_path, port=port)
        thread.join(WAIT_S + 5)
        assert done["run"].returncode == 0, done["run"].stderr
        assert json.loads(done["run"].stdout) == [i * i for i in range(30)]
    finally:
        worker.stop()
        broker.stop()


def test_detach_kill_broker_restart_attach(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    try:
        done = run_submit("--broker", address, "--detach", "square", *[str(i) for i in range(20)])
        assert done.returncode == 0, done.stderr
        submission = done.stdout.strip()
        assert submission
        broker.kill()  # right after the broker said the jobs are durable
        broker, address = start_broker(tmp_path, port=port)
        worker = start_worker(tmp_path, address, 2)
        try:
            done = run_submit("--broker", address, "--json", "--attach", submission)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == [i * i for i in range(20)]
            # Attached and acknowledged: the submission is gone.
            again = run_submit("--broker", address, "--attach", submission, timeout_s=20)
            assert again.returncode != 0 and "no jobs" in again.stderr
        finally:
            worker.stop()
    finally:
        broker.stop()


def test_worker_killed_mid_run_loses_nothing(cluster):
    doomed = cluster.add_worker(2, "--tasks", "tests.tasks", name="doomed")
    cluster.add_worker(2, "--tasks", "tests.tasks", name="survivor")
    with Client(cluster.address) as client:
        futures = [client.submit("tests.tasks:slow_square", i, 0.2) for i in range(40)]
        wait_until(lambda: sum(f.done() for f in futures) >= 4, what="first results")
        doomed.kill()
        assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(40)]


def test_flaky_job_succeeds_with_retries_and_fails_for_good_without(cluster, tmp_path):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    marks = tmp_path / "marks"
    marks.mkdir()
    with Client(cluster.address) as client:
        retrying = client.with_options(retries=3)
        assert retrying.submit("tests.tasks:flaky", str(marks), "a", 2).result(WAIT_S) == "a ok after 3 runs"
        with pytest.raises(JobFailed) as failed:
            client.with_options(retries=1).submit("tests.tasks:flaky", str(marks), "b", 5).result(WAIT_S)
        # The error is the last attempt's.
        assert failed.value.remote_type == "RuntimeError"
        assert "failing run 2 of 5" in failed.value.remote_message
    assert runs_on_disk(marks) == {"a": 3, "b": 2}
    listed = subprocess.run(
        [*__import__("tests.integration.cluster", fromlist=["x"]).python_command("sockpool.broker", "failed", "--json",
                                                                                 "--broker", cluster.address)],
        capture_output=True, text=True, timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    failed_jobs = json.loads(listed.stdout)
    assert [(j["task"], j["attempts"], j["error"]["type"]) for j in failed_jobs] == [("tests.tasks:flaky", 2, "RuntimeError")]


def test_submit_retries_option(cluster, tmp_path):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    done = run_submit("--broker", cluster.address, "--retries", "2", "--json", "tests.tasks:fail", "x")
    assert done.returncode == 1
    assert "ValueError: x" in done.stderr
    # Another session's failure: only the operator lists it.
    with Client(cluster.address) as client:
        assert client.failed_jobs() == []
    with Client(cluster.address, operator=True) as client:
        (job,) = client.failed_jobs()
    assert job["attempts"] == 3


def test_sigterm_broker_flushes_and_keeps_its_queue(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    try:
        done = run_submit("--broker", address, "--detach", "square", "3", "4")
        assert done.returncode == 0, done.stderr
        broker.popen.send_signal(signal.SIGTERM)
        assert broker.popen.wait(15) == 0
        broker, address = start_broker(tmp_path, port=port)
        worker = start_worker(tmp_path, address, 1)
        try:
            done = run_submit("--broker", address, "--attach", done.stdout.strip())
            assert done.returncode == 0, done.stderr
            assert done.stdout.split() == ["9", "16"]
        finally:
            worker.stop()
    finally:
        broker.stop()


def test_delivered_results_leave_the_store(cluster):
    cluster.add_worker(2)
    with Client(cluster.address) as client:
        assert list(client.map("square", range(500), chunksize=10, timeout=WAIT_S)) == [x * x for x in range(500)]
        assert client.submit("square", 2).result(WAIT_S) == 4
    done = run_submit("--broker", cluster.address, "square", "5")
    assert done.returncode == 0
    cluster.broker.popen.send_signal(signal.SIGTERM)
    assert cluster.broker.popen.wait(15) == 0
    with sqlite3.connect(cluster.log_dir / "data" / "broker.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


def test_held_finishes_lost_in_a_kill_9_run_again_and_reach_the_caller_once(tmp_path):
    """A finished job's outcome waits unwritten for its client's ack
    (broker/store/holds.py). Killed meanwhile, the broker restarts with
    the job unfinished on disk: it runs again, its result comes to the
    session again, and the caller still sees each result once."""
    port = free_port()
    broker, address = start_broker(tmp_path, "--finish-hold-s", "60", port=port)
    marks = tmp_path / "marks"
    marks.mkdir()
    db_path = tmp_path / "data" / "broker.sqlite3"
    worker = None
    try:
        # No acks: each finish stays held for as long as the client keeps its results.
        with Client(address, auto_ack=False, reconnect_timeout_s=WAIT_S) as client:
            futures = [client.submit("tests.tasks:slow_square", i, 0.0, str(marks)) for i in range(20)]
            assert client.wait_accepted(WAIT_S)  # every add on disk before any job runs
            delivered: list[int] = []
            for future in futures:
                future.add_done_callback(lambda f: delivered.append(f.result()))
            worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
            assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(20)]
            with contextlib.closing(sqlite3.connect(db_path)) as db:
                assert db.execute("SELECT COUNT(*) FROM jobs WHERE ok IS NULL").fetchone() == (20,)
            broker.kill()
            broker, address = start_broker(tmp_path, "--finish-hold-s", "60", port=port)
            # Each job runs again; its second result reaches the session
            # before the status reply that counts it (one connection, in order).
            wait_until(lambda: runs_on_disk(marks) == {f"sq{i}": 2 for i in range(20)}, what="second runs")
            wait_until(lambda: completed(client) >= 20, what="second results")
            client.ack_all()
            client.status(WAIT_S)  # answered after the ack was taken
        assert sorted(delivered) == [i * i for i in range(20)]  # once each
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    # Acknowledged: nothing is left on disk (the stop wrote every held finish).
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


def test_in_memory_broker_keeps_nothing_on_disk(tmp_path):
    broker, address = start_broker(tmp_path, "--in-memory")
    worker = start_worker(tmp_path, address, 1)
    try:
        wait_for_processes(address, 1)
        with Client(address) as client:
            assert client.submit("square", 6).result(WAIT_S) == 36
    finally:
        worker.stop()
        broker.stop()
    assert not (tmp_path / "data").exists()


def test_one_data_dir_serves_one_broker(tmp_path):
    broker, _ = start_broker(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="in use by another broker"):
            start_broker(tmp_path / "..", "--data-dir", str(tmp_path / "data"))
    finally:
        broker.stop()


def test_a_job_that_keeps_killing_its_worker_ends_as_poison(tmp_path):
    broker, address = start_broker(tmp_path, "--heartbeat-s", "0.2")
    workers = []
    try:
        with Client(address) as client:
            future = client.submit("tests.tasks:kill_worker", 0.6)
            # A supervisor's part: start a new worker whenever the last one died.
            deadline = time.monotonic() + WAIT_S
            while not future.done():
                assert time.monotonic() < deadline, "the poison job never ended"
                if not workers or workers[-1].popen.poll() is not None:
                    workers.append(start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", name=f"w{len(workers)}"))
                time.sleep(0.05)
            with pytest.raises(JobFailed) as failed:
                future.result(0)
        assert failed.value.remote_type == "PoisonJob"
        # MAX_LOST_ATTEMPTS workers died running it. The loop may have started
        # one more after the third died, before the PoisonJob reached us; that
        # one must be alive, never handed the job.
        dead = [worker for worker in workers if worker.popen.poll() is not None]
        assert len(dead) == 3
        assert len(workers) - len(dead) <= 1
        # A healthy worker still gets work from this broker.
        workers.append(start_worker(tmp_path, address, 1, name="healthy"))
        with Client(address) as client:
            assert client.submit("square", 3).result(WAIT_S) == 9
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


def test_submit_timeout_option(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    done = run_submit("--broker", cluster.address, "--timeout", "0.5", "tests.tasks:hang", "30", timeout_s=30)
    assert done.returncode == 1
    assert "Timeout" in done.stdout and "timeout" in done.stderr
    # The pool process was replaced: the worker still serves.
    done = run_submit("--broker", cluster.address, "square", "6")
    assert done.returncode == 0 and done.stdout.split() == ["36"]


def test_client_notices_a_silent_broker_and_reconnects(tmp_path, caplog):
    broker, address = start_broker(tmp_path, "--heartbeat-s", "0.2")
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks")
    try:
        wait_for_processes(address, 1)
        with caplog.at_level("WARNING", logger="sockpool.client"), Client(address) as client:
            future = client.submit("tests.tasks:slow_square", 7, 1.5)
            broker.popen.send_signal(signal.SIGSTOP)  # alive, but silent
            wait_until(lambda: "broker silent" in caplog.text, timeout_s=10, what="silence noticed")
            broker.popen.send_signal(signal.SIGCONT)
            assert future.result(WAIT_S) == 49
    finally:
        broker.popen.send_signal(signal.SIGCONT)
        worker.stop()
        broker.stop()


@pytest.mark.slow
def test_restore_in_parts_serves_workers_and_loses_or_repeats_nothing(tmp_path):
    """More queued jobs than one restore batch: the broker listens and feeds
    the worker while it reads the rest, and the client that was connected
    when it died (resending what was not yet acknowledged) gets every result
    once, none repeated by the resend."""
    from sockpool.broker.store.sqlite import RESTORE_BATCH_ROWS

    count = 2 * RESTORE_BATCH_ROWS + 500
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = None
    try:
        with Client(address) as client:
            futures = [client.submit("square", i) for i in range(count)]
            assert client.wait_accepted(WAIT_S)
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            worker = start_worker(tmp_path, address, 2)
            assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(count)]
        wait_until(lambda: "recovered" in broker.log(), what="the restore's log line")
        assert f"recovered {count} unfinished jobs" in broker.log()
        db = sqlite3.connect(tmp_path / "data" / "broker.sqlite3")
        wait_until(lambda: db.execute("SELECT count(*) FROM jobs WHERE ok IS NULL").fetchone()[0] == 0,
                   what="every job finished on disk")
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_large_arguments_kept_in_files_survive_kill_9_and_leave_no_file_behind(tmp_path):
    """Bodies of 64 KiB or more live in files beside the database
    (broker/store/blobs.py). Killed while a client streams them in, the
    broker comes back with every accepted job's bytes intact, the client
    resends the rest, and once all have run no file is left."""
    import hashlib

    blobs = [os.urandom(200_000 + i) for i in range(24)]
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = None
    try:
        with Client(address) as client:
            futures = [client.submit("tests.tasks:digest", data) for data in blobs[:12]]
            assert client.wait_accepted(WAIT_S)
            assert len(os.listdir(tmp_path / "data" / "blobs")) == 12
            # A second batch still streaming in when the kill comes.
            futures += [client.submit("tests.tasks:digest", data) for data in blobs[12:]]
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            worker = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks")
            assert [f.result(WAIT_S) for f in futures] == [hashlib.sha256(d).hexdigest() for d in blobs]
        wait_until(lambda: os.listdir(tmp_path / "data" / "blobs") == [], what="every body file removed")
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
