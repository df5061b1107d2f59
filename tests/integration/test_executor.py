"""`client.Executor`: code written for ProcessPoolExecutor, run on the cluster."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor as AnyExecutor
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import tests.tasks as tasks
from sockpool.client import Client, Executor, JobFailed
from sockpool.worker import tasks as builtin_tasks

WAIT_S = 30


def workload(executor: AnyExecutor) -> tuple[Any, ...]:
    """Code as written for a process pool: only the executor passed in differs."""
    with executor:
        one = executor.submit(tasks.add, 2, 3)
        keyword = executor.submit(tasks.greet, "ada", greeting="hi")
        cubes = list(executor.map(tasks.cube, range(30), chunksize=4))
        sums = list(executor.map(tasks.add, range(10), range(10, 20)))
        empty = list(executor.map(tasks.cube, []))
        caught = []
        try:
            executor.submit(tasks.fail, "bad input").result(WAIT_S)
        except ValueError:  # the task's own exception type
            caught.append("ValueError")
        try:
            list(executor.map(tasks.cube, [1, "x"]))
        except TypeError:
            caught.append("TypeError")
        return one.result(WAIT_S), keyword.result(WAIT_S), cubes, sums, empty, caught


def test_code_for_a_process_pool_runs_on_the_cluster_unchanged(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    # forkserver: pytest's process has threads, and fork() from it is unsafe.
    local = workload(ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")))
    remote = workload(Executor(cluster.address))
    assert remote == local
    assert local == (5, "hi ada", [x**3 for x in range(30)], [2 * x + 10 for x in range(10)], [], ["ValueError", "TypeError"])


def test_failures_timeouts_and_what_cannot_run(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    with Executor(cluster.address) as executor:
        assert executor.submit(builtin_tasks.square, 7).result(WAIT_S) == 49  # built-ins by their bare name

        with pytest.raises(JobFailed) as failed:
            executor.submit(tasks.fail, "bad input").result(WAIT_S)
        assert (failed.value.remote_type, failed.value.remote_message) == ("ValueError", "bad input")

        # map yields the results before the failed item, then raises.
        results = executor.map(builtin_tasks.square, [1, 2, "x", 4], chunksize=2)
        assert [next(results), next(results)] == [1, 4]
        with pytest.raises(JobFailed, match="TypeError"):
            next(results)

        # The timeout counts from the call to map, as in ProcessPoolExecutor.
        slow = executor.map(tasks.busy, [1.5], timeout=0.2)
        with pytest.raises(TimeoutError):
            list(slow)

        def nested(x: int) -> int:
            return x

        for fn, why in [
            (lambda x: x, "not a top-level function"),
            (nested, "not a top-level function"),
            (len, "not a plain function"),
            (tasks._private, "private"),
        ]:
            with pytest.raises(TypeError, match=why):
                executor.submit(fn, 1)
            with pytest.raises(TypeError, match=why):
                executor.map(fn, [1])
        assert executor.submit(tasks.add, 1, 1).result(WAIT_S) == 2  # still serving


def test_shutdown_waits_for_pending_work_then_refuses_more(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    executor = Executor(cluster.address)
    futures = [executor.submit(tasks.busy, 0.3) for _ in range(3)]
    executor.shutdown(wait=True)
    assert all(f.done() and isinstance(f.result(), int) for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.add, 1, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.map(tasks.cube, [1])


def test_shutdown_can_cancel_what_no_worker_has_taken(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    executor = Executor(cluster.address)
    futures = [executor.submit(tasks.busy, 1.0) for _ in range(4)]
    executor.shutdown(wait=True, cancel_futures=True)
    # Had shutdown waited for them, they would hold results, not be cancelled;
    # what a worker had taken (running) is not cancelled, and finished.
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 2
    assert all(isinstance(f.result(0), int) for f in futures if not f.cancelled())


def test_a_cancelled_futures_result_is_dropped_quietly(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    with Client(cluster.address) as client:
        cancelled = client.submit("tests.tasks:busy", 0.3)
        assert cancelled.cancel()
        # Same task, one process: this result comes after the cancelled one's.
        assert isinstance(client.submit("tests.tasks:busy", 0.0).result(WAIT_S), int)
        assert client.submit("square", 3).result(WAIT_S) == 9  # the client still works
