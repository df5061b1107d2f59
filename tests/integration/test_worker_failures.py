"""A worker's pool processes crash, hang, or the worker is told to stop: real processes.

The Runner tests drive a real `multiprocessing.Pool` with no broker, to see
chunk-mates run again; the rest go through a real broker and workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sockpool.client import Client, JobFailed
from sockpool.worker.runner import Runner

from .cluster import start_broker, start_worker, wait_for_processes

WAIT_S = 30


def wait_until(condition: Any, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(pid, 0); it runs nothing any more.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def assert_full_capacity(client: Client, processes: int) -> None:
    """`processes` jobs at once land on `processes` distinct pool processes.

    A replacement process may still be starting when the first round is
    queued, so a few rounds are allowed; a pool one process short fails
    every round."""
    seen: list[set[int]] = []
    for _ in range(4):
        futures = [client.submit("tests.tasks:busy", 0.6) for _ in range(processes)]
        pids = {f.result(WAIT_S) for f in futures}
        if len(pids) == processes:
            return
        seen.append(pids)
    raise AssertionError(f"{processes} jobs at once never ran on {processes} processes: {seen}")


# -- Runner on its own: what comes back, and how often ----------------------


class Collector:
    """The Runner's callback: every result entry and released id, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[list[Any]] = []
        self.released: list[int] = []

    def __call__(self, tag: Any, packed: bytes, count: int, released: list[int]) -> None:
        entries = msgpack.unpackb(packed)
        assert len(entries) == count
        with self.lock:
            self.results.extend(entries)
            self.released.extend(released)

    def wait_for(self, n: int) -> None:
        wait_until(lambda: len(self.results) + len(self.released) >= n, what=f"{n} jobs back")

    def by_id(self) -> dict[int, list[Any]]:
        with self.lock:
            ids = [entry[0] for entry in self.results]
            assert len(ids) == len(set(ids)), f"a job came back twice: {ids}"
            return {entry[0]: entry for entry in self.results}


@pytest.fixture
def runner():
    r = Runner(2, ["tests.tasks"], 0.01)
    try:
        yield r
    finally:
        assert r.close()


def job(job_id: int, task: str, *args: Any, **options: Any) -> list[Any]:
    entry = [job_id, task, list(args), {}, False]
    return entry + [options] if options else entry


def test_runner_fails_the_crashing_job_and_reruns_its_chunk_mates(runner):
    got = Collector()
    runner.seconds_per_job = 1e-6  # tiny jobs: each process gets one chunk of three
    runner.run([job(1, "square", 1), job(2, "tests.tasks:exit_process", 5), job(3, "square", 3),
                job(4, "square", 4), job(5, "tests.tasks:kill_process", 11), job(6, "square", 6)], "t", got)
    got.wait_for(6)
    time.sleep(0.3)  # anything sent twice would show up by now
    results = got.by_id()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert [results[i][1:] for i in (1, 3, 4, 6)] == [[True, 1], [True, 9], [True, 16], [True, 36]]
    assert results[2][1] is False and results[2][2]["type"] == "WorkerProcessDied"
    assert "exit code 5" in results[2][2]["message"]
    assert results[5][2]["type"] == "WorkerProcessDied"
    assert "SIGSEGV" in results[5][2]["message"]
    assert not runner.busy
    assert len(runner.pool_pids()) == 2


def test_runner_kills_a_job_past_its_timeout_and_reruns_the_rest(runner):
    got = Collector()
    runner.seconds_per_job = 1e-6
    runner.run([job(1, "tests.tasks:hang", timeout=0.3), job(2, "square", 2),
                job(3, "square", 3, timeout=5), job(4, "tests.tasks:busy", 0.05)], "t", got)
    got.wait_for(4)
    results = got.by_id()
    assert results[1][1] is False and results[1][2]["type"] == "Timeout"
    assert "timeout" in results[1][2]["message"] and "0.3 s" in results[1][2]["message"]
    assert [results[i][1:] for i in (2, 3)] == [[True, 4], [True, 9]]
    assert results[4][1] is True
    wait_until(lambda: len(runner.pool_pids()) == 2, what="the pool back to two processes")


def test_runner_drain_hands_back_jobs_not_started(runner):
    got = Collector()
    runner.run([job(i, "tests.tasks:busy", 0.5) for i in range(1, 7)], "t", got)
    wait_until(lambda: len(runner.running_ids("t")) == 2, what="two jobs running")
    assert runner.running_ids("other") == []
    running = set(runner.running_ids())
    runner.drain()
    got.wait_for(6)
    assert set(got.by_id()) == running  # those running finished
    assert sorted(got.released) == sorted(set(range(1, 7)) - running)  # the rest came back unrun
    assert not runner.busy


# -- through a broker ---------------------------------------------------------


def test_crashing_job_fails_with_process_died_and_the_pool_keeps_its_size(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    with Client(cluster.address) as client:
        once = client.with_options(retries=0)
        with pytest.raises(JobFailed) as failed:
            once.submit("tests.tasks:exit_process", 7).result(WAIT_S)
        assert failed.value.remote_type == "WorkerProcessDied"
        assert "exit code 7" in failed.value.remote_message
        with pytest.raises(JobFailed) as failed:
            once.submit("tests.tasks:kill_process", int(signal.SIGKILL)).result(WAIT_S)
        assert failed.value.remote_type == "WorkerProcessDied"
        assert "SIGKILL" in failed.value.remote_message
        assert_full_capacity(client, 2)
        assert client.submit("square", 12).result(WAIT_S) == 144


def test_job_past_its_timeout_fails_with_timeout_and_the_pool_is_replaced(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    with Client(cluster.address) as client:
        quick = client.with_options(timeout=0.5, retries=0)
        hung = quick.submit("tests.tasks:hang")
        in_time = quick.submit("tests.tasks:busy", 0.1)
        with pytest.raises(JobFailed) as failed:
            hung.result(WAIT_S)
        assert failed.value.remote_type == "Timeout"
        assert "timeout" in failed.value.remote_message and "0.5 s" in failed.value.remote_message
        assert isinstance(in_time.result(WAIT_S), int)
        assert_full_capacity(client, 2)


def test_sigterm_finishes_running_jobs_hands_back_the_rest_and_exits_0(cluster, tmp_path):
    leaving = cluster.add_worker(2, "--tasks", "tests.tasks", "--drain-timeout", "20", name="leaving")
    marks = tmp_path / "marks"
    marks.mkdir()
    with Client(cluster.address) as client:
        # Short jobs first, so that the worker prefetches: several long jobs
        # then wait in its pool behind the two it runs. (Short against the
        # 20 ms of work a worker keeps on hand, even on a loaded machine.)
        for f in [client.submit("tests.tasks:busy", 0.001) for _ in range(30)]:
            f.result(WAIT_S)
        # 5 s of work for its 2 processes: most of it still waits when the
        # other worker has joined, however long that takes on a busy machine.
        futures = [client.submit("tests.tasks:slow_square", i, 1.0, str(marks)) for i in range(1, 11)]
        wait_until(lambda: len(list(marks.iterdir())) >= 2, what="two long jobs running")
        cluster.add_worker(2, "--tasks", "tests.tasks", name="staying")
        leaving.popen.send_signal(signal.SIGTERM)
        assert leaving.popen.wait(WAIT_S) == 0, leaving.log()
        assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(1, 11)]
    runs = {p.name: len(p.read_text()) for p in marks.iterdir()}
    # Each job ran exactly once: those running finished on the leaving
    # worker, those handed back ran on the other one.
    assert runs == {f"sq{i}": 1 for i in range(1, 11)}, runs
    log = leaving.log()
    assert "handing back" in log and "drain done" in log, log


def test_drain_timeout_bounds_the_wait_and_leaves_no_pool_process(cluster, tmp_path):
    worker = cluster.add_worker(1, "--tasks", "tests.tasks", "--drain-timeout", "0.5")
    pid_file = tmp_path / "pid"
    with Client(cluster.address) as client:
        client.submit("tests.tasks:hang_noting_pid", str(pid_file))
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), what="the job to start")
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(WAIT_S) == 0, worker.log()
    assert "drain timed out" in worker.log()
    wait_until(lambda: pid_gone(int(pid_file.read_text())), what="the hung pool process gone")


def test_second_signal_exits_at_once(cluster, tmp_path):
    worker = cluster.add_worker(1, "--tasks", "tests.tasks", "--drain-timeout", "600")
    pid_file = tmp_path / "pid"
    with Client(cluster.address) as client:
        client.submit("tests.tasks:hang_noting_pid", str(pid_file))
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), what="the job to start")
        worker.popen.send_signal(signal.SIGINT)
        wait_until(lambda: "draining" in worker.log(), what="the drain to begin")
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(WAIT_S) == 128 + signal.SIGTERM
    wait_until(lambda: pid_gone(int(pid_file.read_text())), what="the hung pool process gone")


def test_worker_drops_a_silent_broker_and_rejoins(tmp_path):
    broker, address = start_broker(tmp_path, "--heartbeat-s", "0.2")
    worker = start_worker(tmp_path, address, 1)
    try:
        wait_for_processes(address, 1)
        broker.popen.send_signal(signal.SIGSTOP)  # alive, connected, and silent
        try:
            wait_until(lambda: "no word from the broker" in worker.log(), what="the worker to notice")
        finally:
            broker.popen.send_signal(signal.SIGCONT)
        wait_until(lambda: worker.log().count("joined broker") >= 2, what="the worker to rejoin")
        with Client(address) as client:
            assert client.submit("square", 5).result(WAIT_S) == 25
    finally:
        worker.stop()
        broker.stop()


def test_heartbeats_tell_the_broker_which_jobs_were_running(tmp_path: Path):
    """A lost worker's job counts an attempt only if a heartbeat listed it as
    running. The job hangs on its first run and fails on every later one;
    with one retry, it runs twice if the lost run counted, three times if not."""
    broker, address = start_broker(tmp_path, "--heartbeat-s", "0.2")
    doomed = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", name="doomed")
    marks = tmp_path / "marks"
    marks.mkdir()
    pid_file = marks / "x.pid"
    try:
        wait_for_processes(address, 1)
        with Client(address) as client:
            job = client.with_options(retries=1).submit("tests.tasks:hang_first_then_fail", str(marks), "x")
            wait_until(lambda: pid_file.exists() and pid_file.read_text(), what="the job to start")
            time.sleep(1.0)  # several heartbeats, each listing the running job
            doomed.kill()
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its orphaned pool process
            survivor = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", name="survivor")
            try:
                with pytest.raises(JobFailed) as failed:
                    job.result(WAIT_S)
            finally:
                survivor.stop()
        assert failed.value.remote_type == "RuntimeError"
        assert (marks / "x").read_text() == "xx"
    finally:
        doomed.stop()
        broker.stop()
