"""`python -m bench`: run every workload, print the table, write JSON and a chart.

sockpool runs as real processes on loopback, exactly as a user runs it: a
`broker start --port 0` and a `worker join --processes 2`, with the client
in this process. The local reference is a `multiprocessing.Pool(2)` (and a
`ProcessPoolExecutor(2)` for round trips) in this same process, timed in the
same run, interleaved with sockpool's runs so that a burst of load on a
shared machine hits both sides alike. Each measure is the median of the runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click

from bench import broker_side as bs
from bench import control, dask_side, dispatch_side, ha, report
from bench import workloads as w
from sockpool.client import Client
from tests.integration.cluster import ROOT, environment, python_command, start_broker, start_worker, wait_for_processes

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Samples = dict[str, dict[str, list[Any]]]


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes and one run: a smoke test, not a measurement.")
@click.option("--runs", type=click.IntRange(1), default=None, help="Runs per workload [default: 5, quick: 1].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Where to write the JSON and the chart.")
@click.option("--dask/--no-dask", "with_dask", default=None,
              help="Also run the workloads on Dask distributed [default: when installed, not with --quick].")
@click.option("--chart/--no-chart", default=True, help="Draw the PNG chart (needs matplotlib).")
def main(quick: bool, runs: int | None, out_dir: Path, with_dask: bool | None, chart: bool) -> None:
    """Benchmark sockpool against a local multiprocessing.Pool(2)."""
    sizes = w.QUICK if quick else w.FULL
    if runs is not None:
        sizes = w.Sizes(**{**sizes.__dict__, "runs": runs})
    if with_dask is None:
        with_dask = not quick and dask_side.available()
    elif with_dask and not dask_side.available():
        raise click.ClickException("Dask distributed is not installed: pip install -e '.[bench]'")

    started = time.monotonic()
    loads = [os.getloadavg()]
    samples: Samples = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory(prefix="sockpool-bench-") as tmp:
        log_dir = Path(tmp)
        run_sockpool_and_local(sizes, log_dir, samples, loads)
        run_durability(sizes, log_dir, samples)
        run_fire_and_forget(sizes, log_dir, samples)
        click.echo("control over jobs ...", err=True)
        control.run_control(sizes, log_dir, samples)
        run_large(sizes, log_dir, samples)
        run_scale(sizes, log_dir, samples)
        run_depth(sizes, log_dir, samples)
        ha.run_postgres(sizes, log_dir, samples)
        run_dispatch(sizes, log_dir, samples)
    if with_dask:
        run_dask(sizes, samples)
    loads.append(os.getloadavg())

    results = {
        "mode": "quick" if quick else "full",
        "sizes": sizes.__dict__,
        "machine": machine(),
        "load_average": {"before": loads[0], "during_max": max(loads[1:]), "after": loads[-1]},
        "wall_s": round(time.monotonic() - started, 1),
        "workloads": report.rows(sizes, samples),
        "samples": samples,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "quick" if quick else "results"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(report.table(results))
    click.echo(f"\nwrote {json_path}")
    if chart:
        png = report.chart(results, out_dir / f"{stem}.png")
        click.echo(f"wrote {png}" if png else "no chart: matplotlib is not installed (pip install -e '.[bench]')")


def fresh_dir(log_dir: Path, name: str) -> Path:
    """A directory of its own for each broker: its data and its logs."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=log_dir))


def run_sockpool_and_local(sizes: w.Sizes, log_dir: Path, samples: Samples, loads: list[Any]) -> None:
    """Items 1-6 on a broker as `broker start` runs by default (durable)."""
    cluster_dir = fresh_dir(log_dir, "cluster")
    broker, address = start_broker(cluster_dir)
    worker = start_worker(cluster_dir, address, 2, "--tasks", "bench.tasks")
    try:
        wait_for_processes(address, 2)
        with Client(address) as client, multiprocessing.Pool(2) as pool, ProcessPoolExecutor(2) as executor:
            # Warm up every side: pool processes started, imports done, estimates made.
            w.sockpool_bulk_map(client, 2000)
            w.local_bulk_map(pool, 2000)
            w.local_latency(executor, 20)
            for run in range(sizes.runs):
                loads.append(os.getloadavg())
                click.echo(f"run {run + 1} of {sizes.runs} ...", err=True)
                add = lambda key, side, value: samples[key][side].append(value)  # noqa: E731
                pid = broker.popen.pid
                rate, cpu = bs.broker_cpu(pid, lambda: w.sockpool_bulk_map(client, sizes.bulk_items))
                add("bulk_map", "sockpool", rate)
                add("broker_cpu_item", "sockpool", cpu / sizes.bulk_items * 1e9)
                add("bulk_map", "local", w.local_bulk_map(pool, sizes.bulk_items))
                rate, cpu = bs.broker_cpu(pid, lambda: w.sockpool_independent(client, sizes.independent_jobs))
                add("independent", "sockpool", rate)
                add("broker_cpu_job", "sockpool", cpu / sizes.independent_jobs * 1e6)
                add("independent", "local", w.local_independent(pool, sizes.independent_jobs))
                # AsyncClient against the Client, run next to it on the same cluster.
                add("async_bulk_map", "sockpool", w.async_bulk_map(address, sizes.bulk_items))
                add("async_bulk_map", "client", w.sockpool_bulk_map(client, sizes.bulk_items))
                add("async_independent", "sockpool", w.async_independent(address, sizes.independent_jobs))
                add("async_independent", "client", w.sockpool_independent(client, sizes.independent_jobs))
                add("latency", "sockpool", w.sockpool_latency(client, sizes.latency_rounds))
                add("latency", "local", w.local_latency(executor, sizes.latency_rounds))
                add("hop", "sockpool", bs.broker_hop(address, sizes.latency_rounds))
                add("legs", "sockpool", bs.round_trip_legs(client, sizes.latency_rounds))
                add("parallel", "sockpool", w.sockpool_parallel(client, sizes))
                add("parallel", "local", w.local_parallel(pool, sizes))
                add("cli_submit", "sockpool", sizes.cli_args / w.cli_submit_s(
                    w.sockpool_submit_command(address), sizes.cli_args, ROOT, environment()))
                add("cli_submit", "local", sizes.cli_args / w.cli_submit_s(
                    w.local_submit_command(), sizes.cli_args, ROOT, environment()))
                add("memory", "sockpool", queued_job_bytes(sizes, log_dir))
    finally:
        worker.stop()
        broker.stop()


def queued_job_bytes(sizes: w.Sizes, log_dir: Path) -> float:
    """On a fresh broker with no worker, so every job stays queued."""
    broker, address = start_broker(fresh_dir(log_dir, "memory"))
    try:
        return w.broker_bytes_per_queued_job(broker.popen.pid, address, sizes.queued_jobs)
    finally:
        broker.stop()


def durability_flags() -> tuple[str, str] | None:
    """The broker's flags for durable and in-memory queues, if it has them."""
    done = subprocess.run(
        python_command("sockpool.broker", "start", "--help"), cwd=ROOT, env=environment(),
        capture_output=True, text=True, timeout=60,
    )
    if "--in-memory" in done.stdout and "--data-dir" in done.stdout:
        return "--data-dir", "--in-memory"
    return None


def run_durability(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """Independent jobs on a durable broker against an in-memory one."""
    flags = durability_flags()
    if flags is None:
        return
    for side in ("durable", "in_memory"):
        side_dir = fresh_dir(log_dir, side)
        extra = [flags[0], str(side_dir / "data")] if side == "durable" else [flags[1]]
        broker, address = start_broker(side_dir, *extra)
        worker = start_worker(side_dir, address, 2, "--tasks", "bench.tasks")
        try:
            wait_for_processes(address, 2)
            with Client(address) as client:
                w.sockpool_independent(client, 1000)
                for _ in range(sizes.runs):
                    samples["durable"][side].append(w.sockpool_independent(client, sizes.independent_jobs))
        finally:
            worker.stop()
            broker.stop()


def run_large(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """Jobs carrying large arguments, on an in-memory and on a durable broker,
    against Pool.apply_async with the same bytes; the broker's CPU per MiB
    and its peak RSS while it all streamed through."""
    for side in ("in_memory", "durable"):
        side_dir = fresh_dir(log_dir, f"large-{side}")
        extra = ["--in-memory"] if side == "in_memory" else ["--data-dir", str(side_dir / "data")]
        broker, address = start_broker(side_dir, *extra, "--log-level", "info")
        worker = start_worker(side_dir, address, 2, "--tasks", "bench.tasks", "--log-level", "info")
        key = "large" if side == "in_memory" else "large_durable"
        name = "sockpool" if side == "in_memory" else "durable"
        try:
            wait_for_processes(address, 2)
            with Client(address) as client, multiprocessing.Pool(2) as pool:
                bs.sockpool_large(client, b"x" * 1000, 10)
                bs.local_large(pool, b"x" * 1000, 10)
                for mib, count in sizes.large:
                    data = os.urandom(int(mib * bs.MIB))
                    for _ in range(sizes.runs):
                        rate, cpu = bs.broker_cpu(broker.popen.pid, lambda: bs.sockpool_large(client, data, count))
                        samples[f"{key}_{mib:g}"][name].append(rate)
                        samples[f"{key}_{mib:g}"]["local"].append(bs.local_large(pool, data, count))
                        samples[f"large_cpu_{mib:g}"][name].append(cpu * 1e3 / (mib * count))
            samples["large_rss"][name].append(bs.peak_rss_bytes(broker.popen.pid) / bs.MIB)
        finally:
            worker.stop()
            broker.stop()


def run_scale(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """N client processes and N workers of one process each on one durable
    broker, for each N of the steps: total jobs/s, and whether any client starves."""
    scale_dir = fresh_dir(log_dir, "scale")
    broker, address = start_broker(scale_dir, "--log-level", "info")
    workers = []
    try:
        for step in sizes.scale_steps:
            while len(workers) < step:
                workers.append(start_worker(scale_dir, address, 1, "--log-level", "info", name=f"w{len(workers)}"))
            wait_for_processes(address, step)
            bs.scale_run(address, step, min(200, sizes.scale_jobs), ROOT, environment())  # warm up
            for _ in range(sizes.runs):
                run = bs.scale_run(address, step, sizes.scale_jobs, ROOT, environment())
                samples[f"scale_{step}"]["sockpool"].append(run["jobs_per_s"])
                samples[f"scale_fairness_{step}"]["sockpool"].append(run["fairness"])
        first = sizes.scale_steps[0]
        for step in sizes.scale_steps:
            samples[f"scale_{step}"]["first"] = list(samples[f"scale_{first}"]["sockpool"])
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


def run_fire_and_forget(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """Once, on a fresh durable broker: memory with the jobs queued, then after they ran."""
    click.echo(f"fire and forget, {sizes.forget_jobs:,} jobs ...", err=True)
    side_dir = fresh_dir(log_dir, "forget")
    broker, address = start_broker(side_dir)
    workers = []
    try:
        queued, after = w.fire_and_forget_rss(
            broker.popen.pid, address, sizes.forget_jobs,
            lambda: workers.append(start_worker(side_dir, address, 2, "--tasks", "bench.tasks")),
        )
        samples["forget_rss"]["queued"].append(queued)
        samples["forget_rss"]["sockpool"].append(after)
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


def run_depth(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """Memory per queued job at depth and the restart after kill -9 (one run:
    a million jobs take a while to queue)."""
    depth_dir = fresh_dir(log_dir, "depth")
    start = lambda port=0: start_broker(depth_dir, "--log-level", "info", port=port)  # noqa: E731
    click.echo(f"depth: queueing {sizes.depth_jobs:,} jobs ...", err=True)
    found = bs.depth_and_restart(start, depth_dir / "data", sizes.depth_jobs)
    samples["depth_memory"]["sockpool"].append(found["bytes_per_job"])
    samples["restart_listen"]["sockpool"].append(found["listening_s"])
    samples["restart_restored"]["sockpool"].append(found["restored_s"])
    samples["restart_cpu"]["sockpool"].append(found["restore_cpu_s"])


def run_dispatch(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    """Items 23-25, each run on a cluster of its own (see bench/dispatch_side.py)."""
    for run in range(sizes.runs):
        click.echo(f"queues and priorities, run {run + 1} of {sizes.runs} ...", err=True)
        for key, measure in (
            ("fair_share", dispatch_side.fair_share_wait_ms),
            ("priority", dispatch_side.priority_start_ms),
            ("delayed", dispatch_side.delayed_lateness),
        ):
            value = dispatch_side.on_fresh_cluster(fresh_dir(log_dir, key), lambda a: measure(a, sizes))
            samples[key]["sockpool"].append(value)


def run_dask(sizes: w.Sizes, samples: Samples) -> None:
    click.echo("dask ...", err=True)
    with dask_side.dask_side() as dask:
        dask.bulk_map(2000)
        dask.independent(200)
        for _ in range(min(sizes.runs, 3)):
            samples["bulk_map"]["dask"].append(dask.bulk_map(sizes.bulk_items))
            samples["independent"]["dask"].append(dask.independent(sizes.independent_jobs))
            samples["latency"]["dask"].append(dask.latency(sizes.latency_rounds))
            samples["parallel"]["dask"].append(dask.parallel(sizes))


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
