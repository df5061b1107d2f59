"""Client flow control and the benchmark's smoke run, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sockpool.client import link as client_link
from sockpool.client import Client

from .cluster import ROOT, environment, wait_until_stopped

WAIT_S = 60


def test_submit_waits_while_the_broker_accepts_nothing(cluster):
    """A stopped broker accepts nothing: submit blocks at the bound, and
    carries on, losing nothing, once the broker runs again."""
    bound = client_link.MAX_PENDING_JOBS
    extra = 50
    submitted: list = []
    with Client(cluster.address) as c:
        os.kill(cluster.broker.popen.pid, signal.SIGSTOP)
        try:
            wait_until_stopped(cluster.broker.popen.pid)
            def submit_all() -> None:
                for i in range(bound + extra):
                    submitted.append(c.submit("square", i))

            submitter = threading.Thread(target=submit_all, daemon=True)
            submitter.start()
            deadline = time.monotonic() + WAIT_S
            while len(submitted) < bound and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(submitted) == bound
            # Nothing can be accepted while the broker is stopped, so the
            # submitter stays blocked at the bound however long we look.
            time.sleep(0.3)
            assert len(submitted) == bound and submitter.is_alive()
        finally:
            os.kill(cluster.broker.popen.pid, signal.SIGCONT)
        submitter.join(WAIT_S)
        assert not submitter.is_alive()
        cluster.add_worker(2)
        assert [f.result(WAIT_S) for f in submitted] == [i * i for i in range(bound + extra)]


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_bench_quick_run_writes_well_formed_json(tmp_path):
    """`python -m bench --quick` runs every workload end to end (speed is not checked)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-dask", "--no-chart", "--out", str(tmp_path)],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    assert results["mode"] == "quick"
    assert {"nproc", "cpu", "python"} <= set(results["machine"])
    keys = [w["key"] for w in results["workloads"]]
    assert keys[:8] == ["bulk_map", "independent", "latency", "latency", "parallel", "memory", "cli_submit", "durable"]
    assert {"large_1", "large_durable_8", "broker_cpu_job", "broker_cpu_item", "scale_2", "scale_fairness_2",
            "hop", "depth_memory", "forget_rss", "async_bulk_map", "async_independent", "restart_listen", "restart_restored",
            "plain_jobs", "limited", "keyed_submits", "key_memory", "key_store", "postgres", "failover",
            "fair_share", "priority", "delayed"} <= set(keys)
    # The PostgreSQL rows run where a PostgreSQL server and psycopg are installed (bench/ha.py).
    from bench.ha import unavailable

    skipped = {"postgres", "failover"} if unavailable() else set()
    for workload in results["workloads"]:
        if workload["key"] in skipped:
            assert workload["sockpool"] is None
            continue
        assert workload["sockpool"] is not None, workload
        # CPU is counted in clock ticks (a quick run's few hundred jobs, or
        # its map, may take none of the broker's); a lone job may spend no
        # measurable time queued.
        counted_in_ticks = (workload["key"] in ("broker_cpu_job", "broker_cpu_item", "legs")
                            or workload["key"].startswith("large_cpu"))
        assert workload["sockpool"] >= 0 if counted_in_ticks else workload["sockpool"] > 0, workload
        if workload["key"] not in ("memory", "failover") and workload["reference"] != "none":
            assert workload["local"] is not None and (workload["local"] > 0 or counted_in_ticks), workload
            assert workload["ratio"] is not None or counted_in_ticks
    assert "| workload |" in done.stdout
