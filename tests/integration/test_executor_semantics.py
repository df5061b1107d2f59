"""The Executor behaves as the stdlib's do: values keep their types, futures
run and cancel as theirs, failures are the same exceptions, and its
lifecycle (interpreter exit, dropping it) matches ProcessPoolExecutor's."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool

import pytest

import tests.tasks as tasks
from sockpool.client import Client, Executor, JobFailed
from sockpool.worker import tasks as builtin_tasks

from .cluster import ROOT, environment, start_broker, start_worker
from .test_durability import free_port, wait_until

WAIT_S = 30


def same(a, b) -> bool:
    """Equal, with the same types all the way down (a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


NESTED = (1, [2, (3, 4)], {"k": (5, [6])}, ())


def test_tuples_and_ints_of_any_size_travel_both_ways(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    with Executor(cluster.address) as executor:
        assert executor.submit(tasks.power, 39, 39).result(WAIT_S) == pow(39, 39)
        assert executor.submit(tasks.power, -2, 65).result(WAIT_S) == -(2**65)
        assert same(executor.submit(builtin_tasks.echo, NESTED).result(WAIT_S), NESTED)
        assert same(executor.submit(builtin_tasks.echo, [NESTED, 2**64]).result(WAIT_S), [NESTED, 2**64])
        assert same(executor.submit(tasks.pair, 2**100, (1,)).result(WAIT_S), (2**100, (1,)))
        # What the task itself sees: tuples and big ints, positional and keyword.
        seen = executor.submit(tasks.types_of, (1,), [1], 2**70, t=(2,), big=-(2**70), plain=[3]).result(WAIT_S)
        assert same(seen, (["tuple", "list", "int"], {"t": "tuple", "big": "int", "plain": "list"}))
        # Map chunks, one iterable and several.
        assert same(list(executor.map(builtin_tasks.echo, [(i, 2**70) for i in range(50)], chunksize=7)),
                    [(i, 2**70) for i in range(50)])
        assert same(list(executor.map(tasks.pair, range(5), [(i,) for i in range(5)])),
                    [(i, (i,)) for i in range(5)])
        # A chunk with a failed item: the others keep their types, the failure its args.
        with Client(cluster.address) as client:
            outcome = list(client.map("tests.tasks:tuple_or_fail", range(6), chunksize=6, return_exceptions=True))
        assert same(outcome[:3] + outcome[4:], [(i, 2**70 + i) for i in (0, 1, 2, 4, 5)])
        assert isinstance(outcome[3], ValueError) and same(outcome[3].args, ((3, "three"),))
        # A list stays a list.
        assert same(executor.submit(builtin_tasks.echo, [[1], []]).result(WAIT_S), [[1], []])


def test_tuples_and_big_ints_survive_a_broker_killed_before_any_worker(tmp_path):
    """The broker stores them as the client sent them and passes them on."""
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = None
    try:
        with Client(address) as client:
            futures = [client.submit("echo", (i, 2**70 + i, [(i,)])) for i in range(20)]
            chunks = client.map("echo", [(i, -(2**80)) for i in range(200)], chunksize=50, timeout=WAIT_S)
            assert client.wait_accepted(WAIT_S)
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            worker = start_worker(tmp_path, address, 2)
            assert all(same(f.result(WAIT_S), (i, 2**70 + i, [(i,)])) for i, f in enumerate(futures))
            assert same(list(chunks), [(i, -(2**80)) for i in range(200)])
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_a_future_runs_once_a_worker_takes_its_job_and_then_cannot_be_cancelled(cluster, tmp_path):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    with Executor(cluster.address) as executor:
        running = executor.submit(tasks.busy, 1.5)
        wait_until(running.running, WAIT_S, "the first job running")
        queued = executor.submit(tasks.busy, 0.0)  # one process, busy: nobody takes it yet
        assert not queued.running()
        assert not running.cancel() and not running.cancelled()
        assert queued.cancel() and queued.cancelled()
        # wait() counts a cancelled future as done at once, as the stdlib's.
        done, _ = wait([queued, running], timeout=WAIT_S, return_when=FIRST_COMPLETED)
        assert queued in done
        assert isinstance(running.result(WAIT_S), int)


def test_remote_sys_exit_and_a_dead_pool_process_are_what_the_stdlib_raises(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    with Executor(cluster.address) as executor:
        with pytest.raises(SystemExit) as exited:
            executor.submit(tasks.exit_with, 3).result(WAIT_S)
        assert isinstance(exited.value, JobFailed) and exited.value.code == 3
        with pytest.raises(BrokenProcessPool):
            executor.submit(tasks.kill_process, 9).result(WAIT_S)
        with pytest.raises(RuntimeError) as raised:
            executor.submit(tasks.raise_with, "123", (4, 5)).result(WAIT_S)
        assert same(raised.value.args, ("123", (4, 5)))
        with pytest.raises(ZeroDivisionError) as divided:
            executor.submit(tasks.power, 0, -1).result(WAIT_S)
        assert divided.value.args == ("0.0 cannot be raised to a negative power",)


def run_script(address: str, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(body).replace("ADDRESS", address)
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_script_that_exits_without_shutdown_gets_its_results(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    done = run_script(cluster.address, """
        from sockpool import Executor
        import tests.tasks as tasks
        executor = Executor("ADDRESS")
        future = executor.submit(tasks.slow_square, 7, 0.5)
        future.add_done_callback(lambda f: print("result", f.result(), flush=True))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["result", "49"], done.stderr


def test_a_script_that_drops_its_executor_unshut_still_gets_its_results(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    done = run_script(cluster.address, """
        import gc
        from sockpool import Executor
        import tests.tasks as tasks
        future = Executor("ADDRESS").submit(tasks.slow_square, 6, 0.5)
        gc.collect()
        future.add_done_callback(lambda f: print("result", f.result(), flush=True))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["result", "36"], done.stderr


def test_submit_after_interpreter_shutdown_raises_as_the_stdlib(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    done = run_script(cluster.address, """
        import atexit
        @atexit.register
        def run_last():
            try:
                executor.submit(tasks.add, 1, 2)
            except RuntimeError as exc:
                print(repr(exc), flush=True)
        from sockpool import Executor
        import tests.tasks as tasks
        executor = Executor("ADDRESS")
        assert executor.submit(tasks.add, 1, 1).result(30) == 2
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RuntimeError('cannot schedule new futures after interpreter shutdown')"


def sockpool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sockpool-")]


def test_an_executor_or_client_dropped_without_shutdown_cleans_up(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    assert not sockpool_threads()
    executor = Executor(cluster.address)
    assert executor.submit(tasks.add, 1, 1).result(WAIT_S) == 2
    client = Client(cluster.address)
    assert client.submit("square", 3).result(WAIT_S) == 9
    assert len(sockpool_threads()) == 6
    del executor, client
    gc.collect()
    wait_until(lambda: not sockpool_threads(), WAIT_S, "the dropped clients' threads ending")
    with Client(cluster.address) as watcher:
        wait_until(lambda: watcher.status()["clients"] == 1, WAIT_S, "the broker seeing them go")


def test_a_dropped_executor_still_delivers_what_was_submitted(cluster):
    """As with a ThreadPoolExecutor dropped with work queued: the work ends,
    then the connection and threads go."""
    cluster.add_worker(1, "--tasks", "tests.tasks")
    futures = Executor(cluster.address).submit(tasks.slow_square, 5, 0.3), Client(cluster.address).submit("square", 4)
    gc.collect()
    assert [f.result(WAIT_S) for f in futures] == [25, 16]
    gc.collect()
    wait_until(lambda: not sockpool_threads(), WAIT_S, "the dropped clients' threads ending")


def test_max_workers_bounds_the_jobs_at_the_cluster_and_the_rest_wait_here(cluster):
    cluster.add_worker(4, "--tasks", "tests.tasks")
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(cluster.address, max_workers=0)
    with Executor(cluster.address, max_workers=2) as executor:
        futures = [executor.submit(tasks.busy, 0.4) for _ in range(6)]
        with Client(cluster.address) as watcher:
            assert sum(f.running() for f in futures) == 2  # the two places are taken at once
            assert futures[-1].cancel()  # still waiting here: never sent
            while not all(f.done() for f in futures):
                queue = watcher.status()["queue"]
                assert queue["in_flight"] + queue["ready"] <= 2  # four processes, but two jobs at a time
                assert sum(f.running() for f in futures) <= 2
        assert all(isinstance(f.result(0), int) for f in futures[:-1])
        assert list(executor.map(tasks.cube, range(10), chunksize=3)) == [x**3 for x in range(10)]
    with Executor(cluster.address, max_workers=1) as executor:
        executor.submit(tasks.busy, 0.2)
        queued = [executor.submit(tasks.add, i, 1) for i in range(20)]
    # shutdown(wait=True) let everything waiting here go and finish.
    assert [f.result(0) for f in queued] == list(range(1, 21))


def test_an_initializer_runs_in_each_pool_process_before_the_executors_jobs(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks")
    with Executor(cluster.address, initializer=tasks.set_marker, initargs=("ready",)) as executor:
        assert set(executor.map(tasks.get_marker, range(40), chunksize=1)) == {"ready"}
        assert executor.submit(tasks.get_marker).result(WAIT_S) == "ready"
    with Executor(cluster.address, initializer=tasks.failing_initializer) as broken:
        with pytest.raises(BrokenProcessPool, match="no database here"):
            broken.submit(tasks.get_marker).result(WAIT_S)
    with pytest.raises(TypeError, match="not a top-level function"):
        Executor(cluster.address, initializer=lambda: None)
