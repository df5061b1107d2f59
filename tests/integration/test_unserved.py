"""A task nobody serves: one rule whatever the timing (broker/unserved.py).

A typo on a settled cluster fails after the grace, naming the served tasks
and the closest; a job whose worker is still joining runs; a job submitted
before any worker fails once workers came and none serves it; and the
submitter, `broker status` and the dashboard say what it waits for."""

from __future__ import annotations

import json
import time

from sockpool.client import Client, JobFailed

from .cluster import run_module, run_submit, start_worker
from .conftest import Cluster

WAIT_S = 30


def test_typo_on_a_settled_cluster_fails_fast_naming_the_closest_task(tmp_path):
    cluster = Cluster(tmp_path, "--in-memory", "--unserved-grace-s", "1")
    try:
        cluster.add_worker(1, "--tasks", "tests.tasks")
        started = time.monotonic()
        done = run_submit("--broker", cluster.address, "tests.tasks:gret", "ada", timeout_s=WAIT_S)
        assert done.returncode == 1
        assert time.monotonic() - started < 10
        # What it waited for, then why it failed.
        assert "submit: waiting: no connected worker serves task 'tests.tasks:gret'" in done.stderr
        assert "UnknownTask" in done.stderr and "did you mean 'tests.tasks:greet'?" in done.stderr, done.stderr
    finally:
        cluster.stop()


def test_a_job_for_a_worker_still_joining_waits_for_it(tmp_path):
    """The report's script: an older worker without the task is connected,
    the new one that has it is still starting. The default grace holds."""
    cluster = Cluster(tmp_path, "--in-memory", "--unserved-grace-s", "10")
    try:
        cluster.add_worker(1, name="old")  # serves the built-in tasks only
        with Client(cluster.address) as client:
            future = client.submit("tests.tasks:greet", "ada")
            time.sleep(1.0)  # the script started a second after `worker join`
            assert not future.done()
            cluster.workers.append(start_worker(tmp_path, cluster.address, 1, "--tasks", "tests.tasks", name="new"))
            assert future.result(WAIT_S) == "hello ada"
    finally:
        cluster.stop()


def test_a_job_submitted_before_any_worker_fails_once_workers_came_without_its_task(tmp_path):
    """The report's other case: `os:system` before any worker joined hung
    forever. Now status shows it waiting, and it fails after the grace."""
    cluster = Cluster(tmp_path, "--in-memory", "--unserved-grace-s", "3", "--metrics-port", "0")
    try:
        with Client(cluster.address) as client:
            future = client.submit("os:system", "echo pwned")
            status = client.status()
            [waiting] = status["unserved"]
            assert waiting["task"] == "os:system" and waiting["jobs"] == 1
            assert 590 < waiting["fails_in_s"] <= 600  # no worker at all: the long timeout
            cluster.add_worker(1)
            text = run_module("sockpool.broker", "status", "--broker", cluster.address, timeout_s=WAIT_S).stdout
            assert "NO WORKER SERVES" in text and "os:system" in text
            api = json.loads(_http_get(f"http://{cluster.broker.metrics_address}/api/status"))
            assert [u["task"] for u in api["unserved"]] == ["os:system"]
            assert api["unserved"][0]["fails_in_s"] <= 3
            try:
                future.result(WAIT_S)
            except JobFailed as failed:
                assert failed.remote_type == "UnknownTask"
                assert "'os:system'" in failed.remote_message and "square" in failed.remote_message
            else:
                raise AssertionError("os:system ran")
            assert client.status()["unserved"] == []
    finally:
        cluster.stop()


def _http_get(url: str) -> str:
    from .test_observe import http_get

    return http_get(url)[0]
