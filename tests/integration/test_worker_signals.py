"""A stop signal drains a worker in whatever form it arrives: to the main
process alone, SIGTERM to the whole process group (systemd's
KillMode=control-group, `kill -TERM -PGID`), or SIGINT to the group (Ctrl-C).
Running jobs finish, the rest go back to the broker, the worker exits 0, and
no job is charged with a failure for it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sockpool.client import Client

from .cluster import start_broker, start_worker, wait_for_processes
from .test_durability import wait_until

WAIT_S = 60


def stop(proc, how: str) -> None:
    pid = proc.popen.pid
    if how == "SIGTERM to the main process":
        os.kill(pid, signal.SIGTERM)
    elif how == "SIGTERM to the group":
        os.killpg(pid, signal.SIGTERM)
    else:
        os.killpg(pid, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the main process", "SIGTERM to the group", "SIGINT to the group"])
def test_a_stop_signal_drains_the_worker_under_load(tmp_path, how):
    broker, address = start_broker(tmp_path, "--in-memory")
    first = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks", "--drain-timeout", "30",
                         name="first", new_session=True)
    second = None
    try:
        wait_for_processes(address, 2)
        with Client(address) as client:
            # 150 jobs of 10 ms, and a map whose chunks hold 10 items each.
            jobs = [client.submit("tests.tasks:busy", 0.01) for _ in range(150)]
            mapped = client.map("tests.tasks:busy", [0.01] * 100, chunksize=10)
            wait_until(lambda: sum(f.done() for f in jobs) >= 20, WAIT_S, "the first results")
            stop(first, how)
            started = time.monotonic()
            assert first.popen.wait(WAIT_S) == 0, first.log()
            assert time.monotonic() - started < 30
            log = first.log()
            assert "drain" in log
            assert "died" not in log and "WorkerProcessDied" not in log, log
            # Whatever the first worker did not run, a second one does: no
            # job failed because its worker was asked to stop.
            second = start_worker(tmp_path, address, 2, "--tasks", "tests.tasks", name="second")
            pids = [f.result(WAIT_S) for f in jobs]
            assert len(pids) == 150 and all(isinstance(p, int) for p in pids)
            assert len(list(mapped)) == 100
            assert client.status()["totals"]["failed"] == 0
    finally:
        for proc in (first, second, broker):
            if proc is not None:
                proc.stop()


@pytest.mark.slow
def test_jobs_running_past_the_drain_timeout_go_back_uncharged(tmp_path):
    """Three workers in turn are stopped while the same 3 s job runs and
    leave after a 0.3 s drain timeout. Were each stop charged as a lost run,
    the job would fail as a PoisonJob after the third; it completes instead."""
    broker, address = start_broker(tmp_path, "--in-memory", "--heartbeat-s", "0.2")
    workers = []
    try:
        with Client(address) as client:
            future = client.submit("tests.tasks:busy", 3.0)
            for n in range(3):
                worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", "--drain-timeout", "0.3",
                                      name=f"w{n}")
                workers.append(worker)

                def running() -> bool:
                    status = client.status()
                    return status["queue"]["in_flight"] == 1 and status["workers"][0]["last_seen_s"] < 0.2

                wait_until(running, WAIT_S, "the job to run")
                time.sleep(0.5)  # two heartbeats: the broker has heard that it runs
                worker.popen.send_signal(signal.SIGTERM)
                assert worker.popen.wait(WAIT_S) == 0, worker.log()
                assert "drain timed out" in worker.log()
            workers.append(start_worker(tmp_path, address, 1, "--tasks", "tests.tasks", name="last"))
            assert isinstance(future.result(WAIT_S), int)
    finally:
        for proc in [*workers, broker]:
            proc.stop()
