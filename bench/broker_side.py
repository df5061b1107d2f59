"""Workloads that look at the broker itself: its CPU per job, large
arguments, a scale run, the hop to the broker, depth and restart.

CPU figures come from the broker's own /proc/PID/stat (utime + stime)
around a workload, so they mean the same on a busy machine as on a quiet
one; rates are given with the local Pool's rate in the same run. Each
function checks the results it got back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, Callable

from bench.tasks import size
from bench.workloads import WAIT_S, broker_bytes_per_queued_job, check, latency_summary, rss_bytes, timed
from sockpool.client import Client
from sockpool.net.connection import connect, new_hello
from sockpool.protocol import ROLE_CLIENT, Ping, Pong

SIZE_TASK = "bench.tasks:size"
MIB = 1024 * 1024


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def broker_cpu(pid: int, fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s value and the broker's CPU seconds while it ran."""
    before = cpu_s(pid)
    value = fn()
    return value, cpu_s(pid) - before


# -- large arguments -------------------------------------------------------------


def sockpool_large(client: Client, data: bytes, n: int) -> float:
    """MiB/s of `n` jobs each carrying `data` as its argument (the task
    returns its length: the cost is moving the bytes)."""
    def run() -> list[Any]:
        futures = [client.submit(SIZE_TASK, data) for _ in range(n)]
        return [f.result(WAIT_S) for f in futures]

    elapsed, values = timed(run)
    check(values, [len(data)] * n, "large arguments")
    return len(data) * n / MIB / elapsed


def local_large(pool: Pool, data: bytes, n: int) -> float:
    def run() -> list[Any]:
        pending = [pool.apply_async(size, (data,)) for _ in range(n)]
        return [p.get(WAIT_S) for p in pending]

    elapsed, values = timed(run)
    check(values, [len(data)] * n, "local large arguments")
    return len(data) * n / MIB / elapsed


# -- the hop to the broker -------------------------------------------------------


def broker_hop(address: str, rounds: int) -> dict[str, float]:
    """Round trips of a ping to the broker and its pong: one hop and the
    broker's reader thread, with no queue, no worker and no writer thread
    in between (the broker answers a ping from its outbox like any reply)."""
    conn, _ = connect(address, new_hello(ROLE_CLIENT, name="bench-hop"), 10.0)
    try:
        conn.settimeout(WAIT_S)
        samples = []
        for _ in range(rounds + rounds // 10):
            started = time.perf_counter()
            conn.send(Ping())
            while not isinstance(conn.recv(), Pong):
                pass  # a heartbeat ping of the broker's own: ignore it
            samples.append(time.perf_counter() - started)
        return latency_summary(samples[rounds // 10 :])
    finally:
        conn.close()


def round_trip_legs(client: Client, rounds: int) -> dict[str, float]:
    """Mean milliseconds of a lone job's round trip, split where the broker
    can see it: in all (as the caller sees it), at the broker before a
    worker has it (queue wait), and from the broker handing it to a worker
    to its result arriving back (the worker leg: broker -> worker node ->
    pool process -> back). The rest is the client's side: its two hops to
    the broker and its own threads."""
    def latency_stats() -> tuple[float, int, float, int]:
        latency = client.status()["latency"]
        return (latency["run"]["sum"], latency["run"]["count"],
                latency["queue_wait"]["sum"], latency["queue_wait"]["count"])

    before = latency_stats()
    started = time.perf_counter()
    for i in range(rounds):
        check([client.submit("square", i).result(WAIT_S)], [i * i], "round trip legs")
    total_s = time.perf_counter() - started
    after = latency_stats()
    runs = after[1] - before[1]
    waits = after[3] - before[3]
    worker_ms = (after[0] - before[0]) / max(1, runs) * 1e3
    queue_ms = (after[2] - before[2]) / max(1, waits) * 1e3
    total_ms = total_s / rounds * 1e3
    return {"total_ms": total_ms, "worker_leg_ms": worker_ms, "queue_ms": queue_ms,
            "client_side_ms": total_ms - worker_ms - queue_ms}


# -- scale: N clients and N one-process workers ------------------------------------


def scale_run(
    address: str, clients: int, jobs_per_client: int, cwd: Path, env: dict[str, str],
    watched: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """`clients` client processes submit `jobs_per_client` jobs each at once;
    total jobs/s, and the slowest client's rate over the fastest's.

    `watched` names kinds of process ("broker": [pid], ...): then also each
    kind's CPU microseconds per job (`cpu_us_KIND`, from /proc, from the
    clients' start to their last result) and its threads' wake-ups per job
    (`wakeups_KIND`), and the same of the clients themselves (`client`),
    which measure their own.
    """
    from bench.scale_client import wakeups

    start_at = time.time() + 1.0 + 0.2 * clients  # every client connected and ready by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.scale_client", address, str(jobs_per_client), str(start_at)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(clients)
    ]
    before: dict[str, tuple[float, int]] = {}
    if watched:
        time.sleep(max(0.0, start_at - time.time()))
        before = {kind: (sum(map(cpu_s, pids)), sum(map(wakeups, pids))) for kind, pids in watched.items()}
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=WAIT_S)
        if proc.returncode != 0:
            raise AssertionError(f"scale client failed: {err[-2000:]}")
        reports.append(json.loads(out))
    jobs = clients * jobs_per_client
    finished = max(r["finished_at"] for r in reports)
    rates = [r["jobs"] / (r["finished_at"] - start_at) for r in reports]
    run = {
        "jobs_per_s": jobs / (finished - start_at),
        "fairness": min(rates) / max(rates),
    }
    if watched:
        for kind, pids in watched.items():
            run[f"cpu_us_{kind}"] = (sum(map(cpu_s, pids)) - before[kind][0]) / jobs * 1e6
            run[f"wakeups_{kind}"] = (sum(map(wakeups, pids)) - before[kind][1]) / jobs
        run["cpu_us_client"] = sum(r["cpu_s"] for r in reports) / jobs * 1e6
        run["wakeups_client"] = sum(r["wakeups"] for r in reports) / jobs
    return run


# -- depth and restart -------------------------------------------------------------


def depth_and_restart(
    start: Callable[..., tuple[Any, str]], data_dir: Path, n: int
) -> dict[str, float]:
    """Queue `n` jobs on a durable broker with no worker; its RSS per job;
    then kill -9 and restart it on the same store: seconds until it listens
    (and hands restored jobs to any worker), and until every job is back,
    and the CPU seconds the restarted broker used until then.

    `start(port=...)` starts a broker on `data_dir` and returns (proc, address).
    """
    broker, address = start()
    try:
        per_job = broker_bytes_per_queued_job(broker.popen.pid, address, n)
    except BaseException:
        broker.stop()
        raise
    broker.popen.send_signal(signal.SIGKILL)
    broker.popen.wait(WAIT_S)
    broker.stop()
    port = int(address.rsplit(":", 1)[1])
    started = time.perf_counter()
    broker, address = start(port=port)
    listening_s = time.perf_counter() - started
    try:
        deadline = time.monotonic() + WAIT_S
        while (found := re.search(r"recovered (\d+) unfinished jobs.* in ([\d.]+) s", broker.log())) is None:
            if time.monotonic() > deadline:
                raise AssertionError("the restarted broker did not report its restore")
            time.sleep(0.01)
        restored_s = time.perf_counter() - started
        # Its own CPU until then: steadier than wall time on a busy host.
        restore_cpu_s = cpu_s(broker.popen.pid)
        if int(found.group(1)) != n:
            raise AssertionError(f"restored {found.group(1)} of {n} jobs")
        return {
            "bytes_per_job": per_job,
            "listening_s": listening_s,
            "restored_s": restored_s,
            "restore_cpu_s": restore_cpu_s,
            "rss_after_restore_per_job": rss_bytes(broker.popen.pid) / n,
        }
    finally:
        broker.stop()


def median_of(values: list[dict[str, float]], key: str) -> float:
    return statistics.median(v[key] for v in values)
