"""The benchmark's workloads, each written once per system it runs on.

Every function times one run of one workload and returns its measure
(items/s, jobs/s, seconds, ...). Set-up (starting a cluster, a pool, a
warm-up) happens before the clock starts, on every side alike. Each
function checks the results it got back, so a fast wrong answer fails the
run instead of winning it.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, Callable

from bench.tasks import spin, square
from sockpool.client import AsyncClient, Client
from sockpool.net.connection import Connection, connect, new_hello
from sockpool.protocol import ROLE_CLIENT, Accepted, Notice, Ping, Pong, Submit
from sockpool.protocol.defaults import MAX_JOBS_PER_FRAME

# Every wait in the benchmark gives up after this long.
WAIT_S = 300.0
SPIN_TASK = "bench.tasks:spin"


@dataclass(frozen=True)
class Sizes:
    bulk_items: int
    independent_jobs: int
    latency_rounds: int
    spin_jobs: int
    spin_s: float
    queued_jobs: int
    cli_args: int
    runs: int
    # Large arguments: (MiB per job, jobs) per line.
    large: tuple[tuple[float, int], ...] = ((0.1, 400), (1, 100), (8, 16))
    scale_steps: tuple[int, ...] = (1, 2, 4, 8)
    scale_jobs: int = 5_000  # per client
    depth_jobs: int = 1_000_000
    forget_jobs: int = 0  # fire-and-forget run measured for broker memory
    control_jobs: int = 5_000  # bench/control.py: jobs per run, and keys held
    fair_backlog: int = 1_000
    priority_backlog: int = 100_000
    delayed_jobs: int = 500
    delay_spread_s: float = 2.0  # item 25: the due times spread over this long
    failovers: int = 3  # item 22: kill -9s of the active broker, at least

    @property
    def ideal_spin_wall_s(self) -> float:
        """Wall time of the spin jobs on 2 processes with zero overhead."""
        return self.spin_jobs * self.spin_s / 2


FULL = Sizes(
    bulk_items=300_000, independent_jobs=20_000, latency_rounds=2_000, spin_jobs=200, spin_s=0.01,
    queued_jobs=100_000, cli_args=100_000, runs=5, forget_jobs=1_000_000,
)
QUICK = Sizes(
    bulk_items=3_000, independent_jobs=500, latency_rounds=50, spin_jobs=20, spin_s=0.01,
    queued_jobs=2_000, cli_args=300, runs=1, forget_jobs=5_000, control_jobs=300,
    large=((0.1, 20), (1, 6), (8, 2)), scale_steps=(1, 2), scale_jobs=200, depth_jobs=20_000, fair_backlog=200,
    priority_backlog=2_000, delayed_jobs=50, delay_spread_s=0.5, failovers=1,
)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def check(values: list[Any], expected: list[Any], what: str) -> None:
    if values != expected:
        raise AssertionError(f"{what}: wrong results")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- sockpool -------------------------------------------------------------------


def sockpool_bulk_map(client: Client, n: int) -> float:
    elapsed, values = timed(lambda: list(client.map("square", range(n), timeout=WAIT_S)))
    check(values, [x * x for x in range(n)], "bulk map")
    return n / elapsed


def sockpool_independent(client: Client, n: int) -> float:
    def run() -> list[Any]:
        futures = [client.submit("square", i) for i in range(n)]
        return [f.result(WAIT_S) for f in futures]

    elapsed, values = timed(run)
    check(values, [x * x for x in range(n)], "independent jobs")
    return n / elapsed


def async_bulk_map(address: str, n: int) -> float:
    """Item 8: as item 1, from asyncio code (`await AsyncClient.map(...)`)."""
    async def run() -> float:
        async with AsyncClient(address) as client:
            await client.map("square", range(2000))  # warm up this connection
            started = time.perf_counter()
            values = await client.map("square", range(n), timeout=WAIT_S)
            elapsed = time.perf_counter() - started
        check(values, [x * x for x in range(n)], "AsyncClient bulk map")
        return n / elapsed

    return asyncio.run(run())


def async_independent(address: str, n: int) -> float:
    """Item 9: as item 2, from asyncio code (handles gathered)."""
    async def run() -> float:
        async with AsyncClient(address) as client:
            await asyncio.gather(*[client.submit("square", i) for i in range(200)])  # warm up
            started = time.perf_counter()
            values = await asyncio.wait_for(asyncio.gather(*[client.submit("square", i) for i in range(n)]), WAIT_S)
            elapsed = time.perf_counter() - started
        check(values, [x * x for x in range(n)], "AsyncClient independent jobs")
        return n / elapsed

    return asyncio.run(run())


def sockpool_latency(client: Client, rounds: int) -> dict[str, float]:
    samples = []
    for i in range(rounds + rounds // 10):  # the first tenth warms up
        started = time.perf_counter()
        value = client.submit("square", i).result(WAIT_S)
        samples.append(time.perf_counter() - started)
        check([value], [i * i], "latency")
    return latency_summary(samples[rounds // 10 :])


def sockpool_parallel(client: Client, sizes: Sizes, task: str = SPIN_TASK) -> float:
    def run() -> list[Any]:
        futures = [client.submit(task, sizes.spin_s) for _ in range(sizes.spin_jobs)]
        return [f.result(WAIT_S) for f in futures]

    elapsed, values = timed(run)
    check(values, [sizes.spin_s] * sizes.spin_jobs, "parallel efficiency")
    return sizes.ideal_spin_wall_s / elapsed


def broker_bytes_per_queued_job(broker_pid: int, address: str, n: int) -> float:
    """Queue `n` jobs on a broker with no worker; its RSS growth per job.

    Talks the protocol directly so it can wait for the broker's `accepted`
    replies: only then is every job known to sit in the broker's queue.
    """
    conn, _ = connect(address, new_hello(ROLE_CLIENT, name="bench-memory"), 10.0)
    try:
        conn.settimeout(WAIT_S)
        before = rss_bytes(broker_pid)
        sent = 0
        batch = 0
        while sent < n:
            count = min(MAX_JOBS_PER_FRAME, n - sent)
            batch += 1
            conn.send(Submit(batch, [[sent + i, "square", [sent + i], {}, False] for i in range(count)]))
            expect_accepted(conn, batch, count)
            sent += count
        return (rss_bytes(broker_pid) - before) / n
    finally:
        conn.close()


def fire_and_forget_rss(broker_pid: int, address: str, n: int, start_worker: Callable[[], Any]) -> tuple[float, float]:
    """Submit `n` fire-and-forget jobs to a broker with no worker, then let
    a worker run them all; the broker's RSS in MB with the jobs queued, and
    after they ran. Results nobody can collect must not make it grow."""
    with Client(address) as client:
        forget = client.with_options(fire_and_forget=True)
        for i in range(n):
            forget.submit("square", i)
        if not client.wait_accepted(WAIT_S):
            raise AssertionError("the broker did not accept every fire-and-forget job")
        queued = rss_bytes(broker_pid)
        start_worker()
        deadline = time.monotonic() + WAIT_S
        while (status := client.status())["totals"]["completed"] < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {status['totals']['completed']} of {n} fire-and-forget jobs ran")
            time.sleep(0.2)
        if status["results_kept"]:
            raise AssertionError(f"the broker kept {status['results_kept']} results of fire-and-forget jobs")
        return queued / 1e6, rss_bytes(broker_pid) / 1e6


def expect_accepted(conn: Connection, batch: int, count: int) -> None:
    while isinstance(reply := conn.recv(), (Ping, Notice)):
        if isinstance(reply, Ping):
            conn.send(Pong())  # the broker's heartbeat
        # A notice says the jobs wait for a worker, as they should here.
    if not (isinstance(reply, Accepted) and reply.batch == batch and reply.count == count):
        raise AssertionError(f"broker answered {reply!r} to a submit of {count} jobs")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cli_submit_s(command: list[str], n: int, cwd: Path, env: dict[str, str]) -> float:
    """Wall time of a command that squares the args 0..n-1 and prints them."""
    args = [str(i) for i in range(n)]
    elapsed, done = timed(
        lambda: subprocess.run(
            [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT_S,
            stdin=subprocess.DEVNULL,
        )
    )
    if done.returncode != 0:
        raise AssertionError(f"{command[:4]} failed: {done.stderr[-2000:]}")
    check(done.stdout.split(), [str(i * i) for i in range(n)], "command-line submit")
    return elapsed


def sockpool_submit_command(address: str) -> list[str]:
    return [sys.executable, "-m", "sockpool.client", "--broker", address, "--no-progress", "square"]


# -- the local pool ---------------------------------------------------------------


def local_bulk_map(pool: Pool, n: int) -> float:
    elapsed, values = timed(lambda: pool.map(square, range(n)))
    check(values, [x * x for x in range(n)], "local bulk map")
    return n / elapsed


def local_independent(pool: Pool, n: int) -> float:
    def run() -> list[Any]:
        pending = [pool.apply_async(square, (i,)) for i in range(n)]
        return [p.get(WAIT_S) for p in pending]

    elapsed, values = timed(run)
    check(values, [x * x for x in range(n)], "local independent jobs")
    return n / elapsed


def local_latency(executor: ProcessPoolExecutor, rounds: int) -> dict[str, float]:
    samples = []
    for i in range(rounds + rounds // 10):
        started = time.perf_counter()
        value = executor.submit(square, i).result(WAIT_S)
        samples.append(time.perf_counter() - started)
        check([value], [i * i], "local latency")
    return latency_summary(samples[rounds // 10 :])


def local_parallel(pool: Pool, sizes: Sizes) -> float:
    def run() -> list[Any]:
        pending = [pool.apply_async(spin, (sizes.spin_s,)) for _ in range(sizes.spin_jobs)]
        return [p.get(WAIT_S) for p in pending]

    elapsed, values = timed(run)
    check(values, [sizes.spin_s] * sizes.spin_jobs, "local parallel efficiency")
    return sizes.ideal_spin_wall_s / elapsed


def local_submit_command() -> list[str]:
    return [sys.executable, "-m", "bench.local_submit"]


def latency_summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(samples) * 1e3,
        "p99_ms": percentile(samples, 0.99) * 1e3,
    }
