"""Looking into a running cluster: `broker status`, /metrics, /api/status,
and every option given by environment variable. (The dashboard in a real
browser: test_dashboard.py.)"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sockpool.client import Client

from .cluster import Proc, python_command, read_announcements, run_module, run_submit, wait_for_processes

WAIT_S = 30



def http_get(url: str) -> tuple[str, str]:
    """The body and content type of a GET, with a timeout."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(), response.headers["Content-Type"]


def scrape(metrics_address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    body, content_type = http_get(f"http://{metrics_address}/metrics")
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def run_jobs(address: str) -> None:
    """50 squares in 5 chunks, one failing call, one task nobody serves
    (it fails with UnknownTask after the fixture's short grace)."""
    with Client(address) as client:
        assert list(client.map("square", range(50), chunksize=10, timeout=WAIT_S)) == [x * x for x in range(50)]
        assert client.submit("tests.tasks:fail", "disk full").exception(WAIT_S) is not None
        assert client.submit("nosuch", 1).exception(WAIT_S) is not None


def test_metrics_count_calls_by_task_and_time_jobs(observed):
    observed.add_worker(2, "--tasks", "tests.tasks")
    run_jobs(observed.address)
    samples = scrape(observed.broker.metrics_address)

    # The broker counts a result before it forwards it, so once the client
    # has every result the counts are final: no polling needed.
    assert samples[("sockpool_jobs_submitted_total", (("task", "square"),))] == 50
    assert samples[("sockpool_jobs_completed_total", (("task", "square"),))] == 50
    assert samples[("sockpool_jobs_failed_total", (("task", "square"),))] == 0
    assert samples[("sockpool_jobs_submitted_total", (("task", "tests.tasks:fail"),))] == 1
    assert samples[("sockpool_jobs_failed_total", (("task", "tests.tasks:fail"),))] == 1
    assert samples[("sockpool_jobs_refused_total", ())] == 0
    assert samples[("sockpool_jobs_submitted_total", (("task", "nosuch"),))] == 1
    assert samples[("sockpool_jobs_failed_total", (("task", "nosuch"),))] == 1
    assert samples[("sockpool_job_retries_total", ())] == 0
    assert samples[("sockpool_queue_depth", (("state", "ready"),))] == 0
    assert samples[("sockpool_queue_depth", (("state", "delayed"),))] == 0
    assert samples[("sockpool_queue_depth", (("state", "failed"),))] == 2  # kept for `broker failed`
    assert samples[("sockpool_jobs_in_flight", ())] == 0
    assert samples[("sockpool_workers_connected", ())] == 1
    assert samples[("sockpool_worker_processes", ())] == 2
    assert samples[("process_open_fds", ())] > 0  # the broker process's own metrics

    # Latency is per job: five chunks and the failing call.
    for histogram in ("sockpool_job_queue_wait_seconds", "sockpool_job_run_seconds"):
        assert samples[(f"{histogram}_count", ())] == 6
        assert samples[(f"{histogram}_bucket", (("le", "+Inf"),))] == 6
        assert samples[(f"{histogram}_sum", ())] >= 0
        buckets = sorted(
            (float(labels[0][1]), value) for (name, labels), value in samples.items() if name == f"{histogram}_bucket"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert samples[("sockpool_job_run_seconds_sum", ())] > 0


def test_retries_are_counted_apart_from_final_failures(observed):
    observed.add_worker(1, "--tasks", "tests.tasks")
    with Client(observed.address) as client:
        failed = client.with_options(retries=2).submit("tests.tasks:fail", "still broken").exception(WAIT_S)
        assert failed is not None
        status = client.status()
    samples = scrape(observed.broker.metrics_address)
    assert samples[("sockpool_job_retries_total", ())] == 2
    assert samples[("sockpool_jobs_failed_total", (("task", "tests.tasks:fail"),))] == 1
    assert samples[("sockpool_job_run_seconds_count", ())] == 3  # every run is timed
    assert status["totals"]["retried"] == 2 and status["totals"]["failed"] == 1
    assert status["workers"][0]["failed"] == 3  # the worker's view: three runs failed
    assert [f["retrying"] for f in status["recent_failures"]] == [False, True, True]


def test_metrics_show_queue_depth_and_in_flight_while_jobs_wait(observed):
    observed.add_worker(1, "--tasks", "tests.tasks")
    with Client(observed.address) as client:
        futures = [client.submit("tests.tasks:busy", 2.0) for _ in range(3)]
        # A fresh one-process worker takes one job at a time: one runs, two wait.
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            samples = scrape(observed.broker.metrics_address)
            if samples[("sockpool_jobs_in_flight", ())] == 1 and samples[("sockpool_queue_depth", (("state", "ready"),))] == 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"never saw 1 in flight and 2 ready: {samples}")
        status = client.status()
        assert status["queue"]["ready"] == 2 and status["queue"]["in_flight"] == 1
        assert status["workers"][0]["in_flight"] == 1
        assert not any(f.done() for f in futures)


def test_api_status_is_the_status_as_json_and_unknown_paths_404(observed):
    observed.add_worker(1, name="solo")
    body, content_type = http_get(f"http://{observed.broker.metrics_address}/api/status")
    assert content_type == "application/json"
    status = json.loads(body)
    assert [w["name"] for w in status["workers"]] == ["solo"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        http_get(f"http://{observed.broker.metrics_address}/nope")
    assert missing.value.code == 404


def status_of(address: str, *flags: str) -> Any:
    done = run_module("sockpool.broker", "status", "--broker", address, *flags)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in flags else done.stdout


def test_broker_status_shows_workers_queue_totals_and_tasks(cluster):
    cluster.add_worker(2, "--tasks", "tests.tasks", name="alpha")
    cluster.add_worker(1, name="beta")
    run_jobs(cluster.address)

    # Another session's failure messages: the operator's to read.
    assert "message" not in status_of(cluster.address, "--json")["recent_failures"][1]
    status = status_of(cluster.address, "--json", "--operator")
    workers = {w["name"]: w for w in status["workers"]}
    assert set(workers) == {"alpha", "beta"}
    assert workers["alpha"]["processes"] == 2 and workers["beta"]["processes"] == 1
    assert workers["alpha"]["failed"] == 1  # only alpha serves tests.tasks
    assert workers["alpha"]["done"] + workers["beta"]["done"] == 50
    assert all(w["in_flight"] == 0 and 0 <= w["last_seen_s"] < WAIT_S for w in workers.values())
    # Calls, except `failed`: the failed jobs the broker keeps for `broker failed`.
    assert status["queue"] == {"ready": 0, "in_flight": 0, "delayed": 0, "waiting_on_limit": 0, "failed": 2}
    totals = status["totals"]
    assert (totals["submitted"], totals["completed"], totals["failed"], totals["refused"]) == (52, 50, 2, 0)
    assert status["tasks"]["square"] == {"submitted": 50, "completed": 50, "failed": 0}
    assert status["tasks"]["tests.tasks:fail"] == {"submitted": 1, "completed": 0, "failed": 1}
    assert status["throughput"]["per_s"] >= 0 and sum(status["throughput"]["history"]) == 52
    newest = status["recent_failures"][0]
    assert (newest["task"], newest["type"]) == ("nosuch", "UnknownTask")
    assert status["recent_failures"][1]["message"] == "disk full"
    assert status["recent_failures"][1]["worker"] == "alpha"

    text = status_of(cluster.address, "--operator")
    lines = text.splitlines()
    assert any(line.split()[:3] == ["alpha", workers["alpha"]["address"], "2"] for line in lines)
    assert any(line.split()[:4] == ["square", "50", "50", "0"] for line in lines)
    assert "ValueError: disk full" in text


def test_broker_status_without_a_broker_fails_cleanly(tmp_path):
    done = run_module("sockpool.broker", "status", "--broker", "127.0.0.1:1", "--timeout", "2")
    assert done.returncode == 1
    assert "cannot reach broker" in done.stderr and "Traceback" not in done.stderr


def test_every_option_can_come_from_the_environment(tmp_path):
    broker = Proc(
        python_command("sockpool.broker", "start"), tmp_path / "broker.log",
        env={"SOCKPOOL_START_PORT": "0", "SOCKPOOL_START_METRICS_PORT": "0", "SOCKPOOL_START_NAME": "from-env",
             "SOCKPOOL_START_IN_MEMORY": "1"},
    )
    worker = None
    try:
        address = read_announcements(broker, metrics=True)
        assert broker.metrics_address
        worker = Proc(
            python_command("sockpool.worker", "join"), tmp_path / "worker.log",
            env={"SOCKPOOL_BROKER": address, "SOCKPOOL_JOIN_PROCESSES": "1", "SOCKPOOL_JOIN_NAME": "env-worker",
                 "SOCKPOOL_JOIN_TASKS": "tests.tasks"},
        )
        wait_for_processes(address, 1)
        done = run_submit("tests.tasks:pid", "1", env={"SOCKPOOL_BROKER": address, "SOCKPOOL_JSON": "1"})
        assert done.returncode == 0, done.stderr
        assert isinstance(json.loads(done.stdout)[0], int)  # --json, and the --tasks module was loaded

        done = run_module("sockpool.broker", "status", env={"SOCKPOOL_BROKER": address, "SOCKPOOL_STATUS_JSON": "1"})
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["broker"] == "from-env"
        assert [(w["name"], w["processes"]) for w in status["workers"]] == [("env-worker", 1)]
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
