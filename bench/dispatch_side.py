"""Items 23-25: where and when a job runs (issue #13), on fresh clusters.

23. Fair share: one client queues `fair_backlog` jobs of 10 ms; another
   client's single job waits how long (its time to result, less its run)?
24. Priority: a high-priority job submitted behind `priority_backlog`
   queued jobs of 10 ms, with the workers busy: time from its submit to
   its result (the broker holds the backlog; the worker has prefetched
   some of it).
25. Delayed jobs: `delayed_jobs` jobs due at spread times over `delay_spread_s` on an
   idle cluster; lateness = when the job started - its due time.

Each run gets its own broker and worker, because the backlogs are left
behind when the measure is taken (24 does not wait for 100,000 jobs).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

from bench.workloads import SPIN_TASK, WAIT_S, Sizes, latency_summary
from sockpool.client import Client
from tests.integration.cluster import start_broker, start_worker, wait_for_processes

CLOCK_TASK = "bench.tasks:clock"


def on_fresh_cluster(log_dir: Path, measure: Callable[[str], Any]) -> Any:
    broker, address = start_broker(log_dir)
    worker = start_worker(log_dir, address, 2, "--tasks", "bench.tasks")
    try:
        wait_for_processes(address, 2)
        return measure(address)
    finally:
        worker.stop()
        broker.stop()


def _wait_started(futures: list[Any]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not any(f.done() for f in futures):
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not start")
        time.sleep(0.005)


def fair_share_wait_ms(address: str, sizes: Sizes) -> float:
    with Client(address, name="big") as big, Client(address, name="small") as small:
        # Warm up with the same jobs: the workers' prefetch follows their
        # estimate of a job's time, as it would after any run of such jobs.
        for future in [small.submit(SPIN_TASK, sizes.spin_s) for _ in range(20)]:
            future.result(WAIT_S)
        backlog = [big.submit(SPIN_TASK, sizes.spin_s) for _ in range(sizes.fair_backlog)]
        assert big.wait_accepted(WAIT_S)
        _wait_started(backlog)
        start = time.perf_counter()
        assert small.submit(SPIN_TASK, sizes.spin_s).result(WAIT_S) == sizes.spin_s
        waited = time.perf_counter() - start - sizes.spin_s
        for future in backlog:
            future.result(WAIT_S)
    return waited * 1000


def priority_start_ms(address: str, sizes: Sizes) -> float:
    with Client(address, name="backlog") as client:
        backlog = [client.submit(SPIN_TASK, sizes.spin_s) for _ in range(sizes.priority_backlog)]
        assert client.wait_accepted(WAIT_S)
        _wait_started(backlog)
        start = time.perf_counter()
        client.with_options(priority=9).submit(CLOCK_TASK).result(WAIT_S)
        return (time.perf_counter() - start) * 1000


def delayed_lateness(address: str, sizes: Sizes) -> dict[str, float]:
    rng = random.Random(13)
    with Client(address, name="delayed") as client:
        client.submit(CLOCK_TASK).result(WAIT_S)
        # The first due time leaves half the spread for the submits to land.
        base = time.time() + sizes.delay_spread_s / 2
        due = [base + rng.uniform(0, sizes.delay_spread_s) for _ in range(sizes.delayed_jobs)]
        futures = [client.with_options(at=at).submit(CLOCK_TASK) for at in due]
        started = [f.result(WAIT_S) for f in futures]
    late = [s - d for s, d in zip(started, due)]
    if min(late) < 0:
        raise AssertionError(f"a delayed job ran {-min(late) * 1000:.1f} ms early")
    return latency_summary(late)
