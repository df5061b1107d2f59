"""Results nobody can collect are not kept: a client that left without
detaching loses its results after the session grace, fire-and-forget jobs
(`submit --no-wait`) keep none but their failures, and detached ones stay,
across a kill -9 too."""

from __future__ import annotations

import json
import sqlite3

from sockpool.client import Client

from .cluster import run_module, run_submit, start_broker
from .conftest import Cluster
from .test_durability import free_port, wait_until

WAIT_S = 30


def results_on_disk(data_dir) -> int:
    with sqlite3.connect(data_dir / "broker.sqlite3") as db:
        return db.execute("SELECT count(*) FROM jobs WHERE ok IS NOT NULL").fetchone()[0]


def test_only_results_someone_can_collect_are_kept(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    broker_args = ("--data-dir", str(data), "--session-grace-s", "1")
    broker, address = start_broker(tmp_path, *broker_args, port=port)
    cluster = None
    try:
        # Before any worker: a client that submits and goes away without detaching...
        with Client(address) as gone:
            for i in range(20):
                gone.submit("square", i)
            assert gone.wait_accepted(WAIT_S)
        # ...a detached submission, and fire-and-forget ones, some failing.
        detached = run_submit("--broker", address, "--detach", "square", "1", "2", "3", "4", "5")
        assert detached.returncode == 0, detached.stderr
        session = detached.stdout.strip()
        for task in ("square", "tests.tasks:fail"):
            done = run_submit("--broker", address, "--no-wait", task, *[str(i) for i in range(5)])
            assert done.returncode == 0, done.stderr
            assert done.stdout == "" and "no results are kept" in done.stderr
        with Client(address) as client:
            with_future = client.with_options(fire_and_forget=True).submit("square", 7)
            assert with_future.result(WAIT_S) is None  # resolved once on disk

        broker.stop()  # restart as part of a cluster with a worker
        cluster = Cluster(tmp_path, *broker_args, "--port", str(port))
        cluster.add_worker(2, "--tasks", "tests.tasks")
        # The operator sees every session's failures (`broker failed`).
        with Client(cluster.address, operator=True) as client:
            wait_until(lambda: client.status()["totals"]["completed"] + client.status()["totals"]["failed"] == 36,
                       WAIT_S, "every job to run")
            wait_until(lambda: client.status()["results_kept"] == 5, WAIT_S, "uncollectable results to go")
            assert len(client.failed_jobs()) == 5  # the fire-and-forget failures are listed

        cluster.broker.kill()
        assert results_on_disk(data) == 5  # only the detached ones' rows are left
        broker, address = start_broker(tmp_path, *broker_args, port=port)
        done = run_submit("--broker", address, "--attach", session, "--json", timeout_s=WAIT_S)
        assert done.returncode == 0 and json.loads(done.stdout) == [1, 4, 9, 16, 25]
        failed = run_module("sockpool.broker", "failed", "--broker", address, "--json")
        assert [job["task"] for job in json.loads(failed.stdout)] == ["tests.tasks:fail"] * 5
    finally:
        broker.stop()
        if cluster is not None:
            cluster.stop()
