"""Control over jobs with real processes: cancel and stop, limits, unique
keys, retry from failed, each also across a broker kill -9."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from sockpool.client import Client
from .test_worker_failures import pid_gone

from .cluster import Proc, run_module, run_submit, start_broker, start_worker, wait_for_processes
from .conftest import Cluster

TASKS = ["--tasks", "tests.tasks"]


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{what} not met within {timeout_s} s")


def read_pid(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text(), what=f"{path} written"))


def restart(cluster: Cluster, *broker_args: str) -> None:
    """kill -9 the broker and start it again on the same port and data dir."""
    port = int(cluster.address.rsplit(":", 1)[1])
    cluster.broker.kill()
    cluster.broker.stop()
    cluster.broker, cluster.address = start_broker(cluster.log_dir, *broker_args, port=port)


def test_stopping_a_running_job_replaces_its_process_and_the_worker_goes_on(cluster, tmp_path):
    cluster.add_worker(1, *TASKS)
    with Client(cluster.address) as client:
        hanging = client.submit("tests.tasks:hang_noting_pid", str(tmp_path / "pid"), 60)
        pid = read_pid(tmp_path / "pid")
        # The stdlib's future.cancel() cannot stop a running call; cancel() can.
        asked = time.monotonic()
        assert client.cancel(hanging) is True
        wait_until(lambda: pid_gone(pid), timeout_s=5, what="the pool process killed")
        killed_after = time.monotonic() - asked
        assert hanging.cancelled()
        with pytest.raises(CancelledError):
            hanging.result(1)
        # The pool has a new process and serves the next job at once.
        next_pid = client.submit("tests.tasks:pid").result(10)
        assert next_pid != pid
        assert killed_after < 1.0, f"the process took {killed_after:.2f} s to go"
        status = client.status()
        assert status["totals"]["cancelled"] == 1 and status["queue"]["failed"] == 0


def test_future_cancel_removes_a_queued_job_and_it_never_runs(cluster, tmp_path):
    cluster.add_worker(1, *TASKS)
    marks = tmp_path / "marks"
    marks.mkdir()
    with Client(cluster.address) as client:
        blocker = client.submit("tests.tasks:hang_noting_pid", str(tmp_path / "pid"), 60)
        read_pid(tmp_path / "pid")
        queued = client.submit("tests.tasks:mark_then_sleep", str(marks), "never")
        after = client.submit("tests.tasks:mark_then_sleep", str(marks), "after")
        assert client.wait_accepted(10)
        assert queued.cancel() is True
        assert client.cancel(blocker)
        assert after.result(20) == "after:1"
        time.sleep(0.3)  # give a wrongly kept job the time to show up
        assert not (marks / "never").exists()


def test_a_cancel_survives_a_broker_kill_9(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    session = "cancel-then-crash"
    with Client(cluster.address, session=session, auto_ack=False) as client:
        doomed = client.submit("tests.tasks:mark_then_sleep", str(marks), "doomed")
        kept = client.submit("tests.tasks:mark_then_sleep", str(marks), "kept")
        assert client.wait_accepted(10)
        assert client.cancel(doomed) is True  # queued: no worker yet
        restart(cluster)
        cluster.add_worker(1, *TASKS)
        assert kept.result(30) == "kept:1"
    with Client(cluster.address, session=session) as attached:
        outcomes = {job_id: (ok, value) for job_id, ok, value in attached.collect(10)}
    assert outcomes[doomed.job_id][1]["type"] == "Cancelled"
    assert not (marks / "doomed").exists()


def test_a_stopped_job_stays_stopped_across_a_broker_kill_9(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.add_worker(1, *TASKS)
    with Client(cluster.address) as client:
        running = client.submit("tests.tasks:mark_then_sleep", str(marks), "stopped", 60)
        wait_until(lambda: (marks / "stopped").exists(), what="the job started")
        assert client.cancel(running) is True
        restart(cluster)
        # The worker is back and serves; the stopped job never runs again.
        assert client.submit("tests.tasks:mark_then_sleep", str(marks), "next").result(30) == "next:1"
        time.sleep(0.5)
        assert (marks / "stopped").read_text() == "x"
        assert client.status()["queue"]["in_flight"] == 0


def test_submit_cancel_stops_a_detached_submission(cluster, tmp_path):
    cluster.add_worker(1, *TASKS)
    done = run_submit("--broker", cluster.address, "--detach", "tests.tasks:hang", "60", "60")
    assert done.returncode == 0, done.stderr
    submission = done.stdout.strip()
    with Client(cluster.address) as client:
        wait_until(lambda: client.status()["queue"]["in_flight"] == 1, what="one job running")
    done = run_submit("--broker", cluster.address, "--cancel", submission)
    assert done.returncode == 0, done.stderr
    assert "cancelled 1 waiting and stopped 1 running" in done.stdout
    done = run_submit("--broker", cluster.address, "--attach", submission, timeout_s=30)
    assert done.returncode == 1
    assert done.stdout.count("error: Cancelled") == 2


def test_cancelling_a_map_cancels_its_unfinished_chunks(cluster, tmp_path):
    cluster.add_worker(1, *TASKS)
    with Client(cluster.address) as client:
        results = client.map("tests.tasks:busy", [5.0] * 6, chunksize=1)
        wait_until(lambda: client.status()["queue"]["in_flight"] >= 1, what="a chunk running")
        assert results.cancel() is True
        with pytest.raises(CancelledError):
            next(results)
        status = wait_until(lambda: (s := client.status())["totals"]["cancelled"] == 6 and s, what="six cancelled")
        assert status["queue"]["ready"] == 0 and status["queue"]["in_flight"] == 0


def test_a_cancel_racing_completion_has_one_outcome(cluster):
    cluster.add_worker(2)
    with Client(cluster.address) as client:
        outcomes = []
        for i in range(200):
            future = client.submit("square", i)
            if i % 3 == 1:
                time.sleep(0.0005 * (i % 5))  # cancel at different points of the job's way
            outcomes.append((i, future, client.cancel(future)))
        for i, future, cancelled in outcomes:
            # The answer and the future agree: cancelled, or the real result.
            assert future.cancelled() == cancelled, i
            if not cancelled:
                assert future.result(10) == i * i
        assert {c for _, _, c in outcomes} == {True, False}  # the race went both ways
        status = client.status()
        stopped_or_removed = status["totals"]["cancelled"]
        assert stopped_or_removed + status["totals"]["completed"] == status["totals"]["submitted"]


# -- limits ----------------------------------------------------------------------


def max_seen(marks: Path) -> int:
    return max(int(line) for line in (marks / "seen").read_text().split())


@pytest.mark.slow
def test_twelve_jobs_under_a_limit_of_three_across_two_workers_and_a_kill_9(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    limit = ("--limit", "tests.tasks:concurrency_probe=3")
    cluster = Cluster(tmp_path, *limit)
    try:
        cluster.add_worker(3, *TASKS, name="a")
        cluster.add_worker(3, *TASKS, name="b")
        with Client(cluster.address) as client:
            futures = [client.submit("tests.tasks:concurrency_probe", str(marks), 1.5) for _ in range(12)]
            assert client.wait_accepted(10)
            status = client.status()
            assert status["limits"]["tests.tasks:concurrency_probe"]["limit"] == 3
            assert status["queue"]["waiting_on_limit"] >= 6
            # While the first three run, the broker dies; everything runs after
            # it restarts. The probes outlast a restart, so the runs the kill
            # orphaned would overlap the new ones if their worker kept them.
            wait_until(lambda: len((marks / "seen").read_text().split()) >= 3 if (marks / "seen").exists() else False,
                       what="three probes started")
            restart(cluster, *limit)
            counts = [f.result(60) for f in futures]
        assert max(counts) <= 3 and max_seen(marks) <= 3
        assert max_seen(marks) == 3  # and the limit was used to the full
    finally:
        cluster.stop()


def test_a_per_job_limit_key_holds_across_workers(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.add_worker(2, *TASKS, name="a")
    cluster.add_worker(2, *TASKS, name="b")
    with Client(cluster.address) as client:
        limited = client.with_options(limit_key="customer-7", limit=2)
        futures = [limited.submit("tests.tasks:concurrency_probe", str(marks), 0.2) for _ in range(8)]
        assert [f.result(30) <= 2 for f in futures] == [True] * 8
    assert max_seen(marks) == 2


def test_a_rate_limit_admits_at_most_n_jobs_per_period(tmp_path):
    cluster = Cluster(tmp_path, "--limit", "tests.tasks:started_at=2/1s")
    try:
        cluster.add_worker(2, *TASKS)
        with Client(cluster.address) as client:
            starts = sorted(f.result(30) for f in [client.submit("tests.tasks:started_at") for _ in range(6)])
        # Any three starts span at least the period (less a little clock slack).
        assert all(starts[i + 2] - starts[i] >= 0.9 for i in range(len(starts) - 2)), starts
    finally:
        cluster.stop()


# -- unique keys -------------------------------------------------------------------


def test_one_key_from_two_clients_at_once_makes_one_job_across_a_kill_9(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.add_worker(2, *TASKS)
    barrier = threading.Barrier(2)
    futures = {}

    def submit(name: str, client: Client) -> None:
        barrier.wait(5)
        futures[name] = client.with_options(key="invoice-42").submit(
            "tests.tasks:mark_then_sleep", str(marks), "invoice", 1.0
        )

    with Client(cluster.address) as a, Client(cluster.address) as b:
        threads = [threading.Thread(target=submit, args=(n, c)) for n, c in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert a.wait_accepted(10) and b.wait_accepted(10)
        assert a.status()["totals"]["deduplicated"] == 1
        # The broker dies while the job runs; after it restarts, a third
        # client with the same key still joins that job.
        wait_until(lambda: (marks / "invoice").exists(), what="the job started")
        restart(cluster)
        with Client(cluster.address) as c:
            third = c.with_options(key="invoice-42").submit("tests.tasks:mark_then_sleep", str(marks), "x", 0)
            outcome = {futures["a"].result(30), futures["b"].result(30), third.result(30)}
            assert c.status()["totals"]["deduplicated"] == 1  # counted since the restart
    assert len(outcome) == 1  # one job's outcome, everywhere
    # The run cut short by the kill ran again once after the restart; never per client.
    assert len((marks / "invoice").read_text()) <= 2


def test_submit_key_from_the_command_line_joins_a_running_job(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.add_worker(2, *TASKS)
    with Client(cluster.address) as client:
        first = client.with_options(key="nightly").submit("tests.tasks:mark_then_sleep", str(marks), "n", 1.0)
        wait_until(lambda: (marks / "n").exists(), what="the job started")
        done = run_submit("--broker", cluster.address, "--key", "nightly", "tests.tasks:cube", "3")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == first.result(10) == "n:1"


# -- retry from failed ---------------------------------------------------------------


def test_broker_retry_sends_a_failed_job_again_to_its_submission(cluster, tmp_path):
    cluster.add_worker(1, *TASKS)
    marks = tmp_path / "marks"
    marks.mkdir()
    # A submitter that waits for its results later (by its session ID, as
    # `submit --attach` does): the retry's result goes to it.
    with Client(cluster.address, auto_ack=False) as client:
        session = client.session
        future = client.submit("tests.tasks:flaky", str(marks), "job", 1)
        with pytest.raises(Exception):
            future.result(20)
    listed = run_module("sockpool.broker", "failed", "--broker", cluster.address, "--json")
    failed = [j for j in json.loads(listed.stdout) if j["task"] == "tests.tasks:flaky" and j["args"][1] == "job"]
    assert len(failed) == 1 and isinstance(failed[0]["id"], int)
    restart(cluster)  # the failed list and its ids survive a kill -9
    done = run_module("sockpool.broker", "retry", "--broker", cluster.address, str(failed[0]["id"]))
    assert done.returncode == 0, done.stderr
    assert "queued 1" in done.stdout
    done = run_submit("--broker", cluster.address, "--attach", session, timeout_s=30)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "job ok after 2 runs" in done.stdout
    again = run_module("sockpool.broker", "retry", "--broker", cluster.address, str(failed[0]["id"]))
    assert again.returncode != 0 and "not among the failed jobs" in again.stderr


def test_cancel_and_retry_by_broker_id_are_the_operators(tmp_path):
    from .test_attacks import write_secret

    client_secret = write_secret(tmp_path / "client")
    operator_secret = write_secret(tmp_path / "operator")
    broker, address = start_broker(tmp_path, "--secret-file", client_secret, "--operator-secret-file", operator_secret)
    try:
        with Client(address, secret_file=client_secret) as owner, Client(address, secret_file=client_secret) as other:
            owner.submit("square", 3)  # no worker: it waits
            assert owner.wait_accepted(10)
            with Client(address, secret_file=operator_secret, operator=True) as ops:
                assert ops.status()["queue"]["ready"] == 1
            # Another client may not cancel the owner's jobs by task.
            assert other.cancel_jobs(task="square") == []
            for secret in (client_secret, None):
                args = ["--secret-file", secret] if secret else []
                done = run_module("sockpool.broker", "cancel", "--broker", address, "--task", "square", *args,
                                  env={"SOCKPOOL_OPERATOR_SECRET_FILE": operator_secret} if not secret else None)
                if secret:
                    assert done.returncode != 0 and "authentication failed" in done.stderr
                else:
                    assert done.returncode == 0, done.stderr
                    assert "cancelled 1 waiting" in done.stdout
    finally:
        broker.stop()


@pytest.mark.slow
def test_slots_passed_on_at_workers_keep_a_limit_of_two_through_a_killed_process_a_drain_and_a_kill_9(tmp_path):
    # Short probes under a limit of 2 on two workers of 2 processes: each
    # next probe waits at a worker for the one before it (broker/succession.py).
    # Mid-run a pool process running one is killed, one worker drains away
    # (handing its waiting successors back), and the broker is killed -9;
    # no probe ever saw more than 2 running, and every job finished.
    marks = tmp_path / "marks"
    marks.mkdir()
    limit = ("--limit", "tests.tasks:concurrency_probe=2")
    cluster = Cluster(tmp_path, *limit)
    try:
        cluster.add_worker(2, *TASKS, name="a")
        draining = cluster.add_worker(2, *TASKS, name="b")
        seen = lambda: len((marks / "seen").read_text().split()) if (marks / "seen").exists() else 0  # noqa: E731
        with Client(cluster.address) as client:
            retrying = client.with_options(retries=2)  # the killed one runs again
            futures = [retrying.submit("tests.tasks:concurrency_probe", str(marks), 0.05) for _ in range(60)]
            wait_until(lambda: seen() >= 10, what="ten probes run")
            assert client.status()["totals"]["passed_on"] > 0  # the slots did pass on at the workers
            running = [name for name in os.listdir(marks / "running")]
            if running:
                os.kill(int(running[0].split("-")[0]), 9)
            draining.popen.terminate()
            wait_until(lambda: seen() >= 25, what="25 probes run")
            restart(cluster, *limit)
            counts = [f.result(60) for f in futures]
        assert max(counts) <= 2 and max_seen(marks) == 2
        assert draining.popen.wait(20) is not None
    finally:
        cluster.stop()
