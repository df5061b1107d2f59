"""Workloads for control over jobs (issue #14): what limits and unique keys
cost, and what jobs without them pay for their existence.

Every measure is a ratio to a reference taken in the same run on the same
kind of broker, so the figures read as "costs X times what it costs
without": plain jobs on a broker that also holds limits and keys against
plain jobs on a plain broker; limited jobs against the same jobs unlimited;
keyed submits against plain submits; a held key's broker memory and store
bytes against a plain queued job's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from bench import workloads as w
from sockpool.client import Client
from sockpool.net.connection import connect, new_hello
from sockpool.protocol import ROLE_CLIENT, Submit
from sockpool.protocol.defaults import MAX_JOBS_PER_FRAME
from tests.integration.cluster import start_broker, start_worker, wait_for_processes

Samples = dict[str, dict[str, list[Any]]]
LIMITED_TASK = w.SPIN_TASK


def run_control(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    n = sizes.control_jobs
    add = lambda key, side, value: samples[key][side].append(value)  # noqa: E731
    # A plain broker, then one with a limit on another task and keys held.
    for side, extra in (("plain", ()), ("sockpool", ("--limit", f"{LIMITED_TASK}=2", "--limit", "other=4"))):
        cluster_dir = Path(tempfile.mkdtemp(prefix=f"control-{side}-", dir=log_dir))
        broker, address = start_broker(cluster_dir, *extra)
        worker = start_worker(cluster_dir, address, 2, "--tasks", "bench.tasks")
        try:
            wait_for_processes(address, 2)
            with Client(address) as client, Client(address, auto_ack=False) as holder:
                if side == "sockpool":
                    # Keys held by results nobody collected: the index is full.
                    keyed = [holder.with_options(key=f"held-{i}").submit("square", i) for i in range(n)]
                    w.check([f.result(w.WAIT_S) for f in keyed], [i * i for i in range(n)], "held keys")
                w.sockpool_independent(client, 500)
                for _ in range(sizes.runs):
                    add("plain_jobs", side, w.sockpool_independent(client, n))
                    if side == "sockpool":
                        add("limited", "sockpool", limited_jobs(client, sizes))
                        add("limited", "unlimited", w.sockpool_parallel(client, sizes, task="bench.tasks:unlimited_spin"))
                        # The spin jobs taught the worker that jobs take 10 ms (small
                        # prefetch, chunks of one): let it relearn on tiny ones first,
                        # or whichever side runs next pays for it.
                        w.sockpool_independent(client, 2000)
                        add("keyed_submits", "plain", w.sockpool_independent(client, n))
                        add("keyed_submits", "sockpool", keyed_submits(client, n))
        finally:
            worker.stop()
            broker.stop()
    for _ in range(sizes.runs):
        memory, store = key_cost(sizes.queued_jobs, log_dir)
        add("key_memory", "sockpool", memory["keyed"])
        add("key_memory", "plain", memory["plain"])
        add("key_store", "sockpool", store["keyed"])
        add("key_store", "plain", store["plain"])


def limited_jobs(client: Client, sizes: w.Sizes) -> float:
    """Parallel efficiency of CPU jobs under a global limit of 2 on the
    cluster's 2 processes: at the limit, the limit is the only brake, so
    anything under the unlimited figure is what admission costs (each job
    waits in the broker until a slot frees, none in a worker's prefetch)."""
    return w.sockpool_parallel(client, sizes, task=LIMITED_TASK)


def keyed_submits(client: Client, n: int) -> float:
    """Jobs/s when every submit carries its own unique key (a fresh prefix per
    run, so each submit makes a job and holds a key until it is collected)."""
    prefix = os.urandom(4).hex()

    def run() -> list[Any]:
        futures = [client.with_options(key=f"{prefix}-{i}").submit("square", i) for i in range(n)]
        return [f.result(w.WAIT_S) for f in futures]

    elapsed, values = w.timed(run)
    w.check(values, [i * i for i in range(n)], "keyed submits")
    return n / elapsed


def key_cost(n: int, log_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Broker RSS and store bytes per queued job, with and without a unique
    key (a key of 16 characters), on brokers with no worker."""
    memory, store = {}, {}
    for side in ("plain", "keyed"):
        side_dir = Path(tempfile.mkdtemp(prefix=f"keys-{side}-", dir=log_dir))
        broker, address = start_broker(side_dir)
        try:
            before_disk = disk_bytes(side_dir / "data")
            before = w.rss_bytes(broker.popen.pid)
            queue_jobs(address, n, keyed=side == "keyed")
            memory[side] = (w.rss_bytes(broker.popen.pid) - before) / n
            store[side] = (disk_bytes(side_dir / "data") - before_disk) / n
        finally:
            broker.stop()
    return memory, store


def queue_jobs(address: str, n: int, keyed: bool) -> None:
    conn, _ = connect(address, new_hello(ROLE_CLIENT, name="bench-keys"), 10.0)
    try:
        conn.settimeout(w.WAIT_S)
        sent = batch = 0
        while sent < n:
            count = min(MAX_JOBS_PER_FRAME, n - sent)
            batch += 1
            jobs = [[sent + i, "square", [sent + i], {}, False] + ([{"key": f"invoice-{sent + i:08d}"}] if keyed else [])
                    for i in range(count)]
            conn.send(Submit(batch, jobs))
            w.expect_accepted(conn, batch, count)
            sent += count
    finally:
        conn.close()


def disk_bytes(data_dir: Path) -> int:
    """The store's files: the database and its write-ahead log."""
    return sum(p.stat().st_size for p in data_dir.glob("broker.sqlite3*"))
