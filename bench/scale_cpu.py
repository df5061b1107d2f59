"""Where the CPU of the scale run (item 18) goes: `python -m bench.scale_cpu`.

Runs item 18 (N clients, N workers of one process, one durable broker) for
each N and prints, per job, the CPU microseconds (utime + stime from
/proc) and the wake-ups (voluntary context switches of all threads) of
each kind of process: the broker, the worker nodes, their pool processes
and the clients. Medians of `--runs` runs per N. On a machine of C cores
the scale run cannot go faster than C over the sum of the CPU per job, so
this says which process kind's part grows with N (bench/README.md, "The
scale run"). Not part of `python -m bench`: a probe, a minute or two.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import click

from bench import broker_side as bs
from tests.integration.cluster import ROOT, environment, start_broker, start_worker, wait_for_processes

KINDS = ("broker", "node", "pool", "client")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a worker's forkserver and pool processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found + [grandchild for child in found for grandchild in descendants(child)]


@click.command()
@click.option("--steps", default="1,2,4,8", show_default=True, help="the Ns, comma-separated")
@click.option("--jobs", default=5_000, show_default=True, help="jobs per client")
@click.option("--runs", default=3, show_default=True, help="runs per N (medians are printed)")
def main(steps: str, jobs: int, runs: int) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="scale-cpu-"))
    broker, address = start_broker(log_dir, "--log-level", "info")
    workers = []
    env = environment()
    click.echo(f"{'N':>3} {'jobs/s':>8} {'fair':>5}  " + "  ".join(f"{k + ' us (wakes)':>18}" for k in KINDS)
               + f"  {'sum us':>6}")
    try:
        for n in [int(step) for step in steps.split(",")]:
            while len(workers) < n:
                workers.append(start_worker(log_dir, address, 1, "--log-level", "info", name=f"w{len(workers)}"))
            wait_for_processes(address, n)
            nodes = [w.popen.pid for w in workers]
            pools = [pid for node in nodes for pid in descendants(node)]
            watched = {"broker": [broker.popen.pid], "node": nodes, "pool": pools}
            bs.scale_run(address, n, min(200, jobs), ROOT, env)  # warm up
            samples = [bs.scale_run(address, n, jobs, ROOT, env, watched) for _ in range(runs)]

            def median(key: str) -> float:
                return statistics.median(s[key] for s in samples)

            cells = "  ".join(f"{median(f'cpu_us_{k}'):10.1f} ({median(f'wakeups_{k}'):5.3f})" for k in KINDS)
            total = sum(median(f"cpu_us_{k}") for k in KINDS)
            click.echo(f"{n:>3} {median('jobs_per_s'):8.0f} {median('fairness'):5.2f}  {cells}  {total:6.1f}")
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


if __name__ == "__main__":
    main()
