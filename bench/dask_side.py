"""The same workloads on Dask distributed, when it is installed.

A `LocalCluster` of 2 worker processes with one thread each stands in for
sockpool's broker and one worker with 2 processes. Dask schedules about a
millisecond per task, so the sizes here are smaller than sockpool's and the
results are rates, which do not depend on the count; the bulk map uses
`dask.bag`, Dask's own way to map a function over many small items.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator

from bench.tasks import spin, square
from bench.workloads import WAIT_S, Sizes, check, latency_summary, timed

# Dask's scheduler costs ~1 ms per task: full-size runs of 20,000 separate
# tasks would take most of the time budget, so its job counts are capped.
MAX_DASK_JOBS = 4_000
MAX_DASK_ROUNDS = 300


def available() -> bool:
    try:
        import dask.bag  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class DaskSide:
    client: Any

    def bulk_map(self, n: int) -> float:
        import dask.bag

        # Four partitions per process, as Pool.map chunks its input.
        bag = dask.bag.from_sequence(range(n), npartitions=8).map(square)
        elapsed, values = timed(lambda: bag.compute())
        check(list(values), [x * x for x in range(n)], "dask bulk map")
        return n / elapsed

    def independent(self, n: int) -> float:
        n = min(n, MAX_DASK_JOBS)

        def run() -> list[Any]:
            futures = [self.client.submit(square, i, pure=False) for i in range(n)]
            return self.client.gather(futures)

        elapsed, values = timed(run)
        check(values, [x * x for x in range(n)], "dask independent jobs")
        return n / elapsed

    def latency(self, rounds: int) -> dict[str, float]:
        rounds = min(rounds, MAX_DASK_ROUNDS)
        samples = []
        for i in range(rounds + rounds // 10):
            elapsed, value = timed(lambda: self.client.submit(square, i, pure=False).result(WAIT_S))
            samples.append(elapsed)
            check([value], [i * i], "dask latency")
        return latency_summary(samples[rounds // 10 :])

    def parallel(self, sizes: Sizes) -> float:
        def run() -> list[Any]:
            futures = [self.client.submit(spin, sizes.spin_s, pure=False) for _ in range(sizes.spin_jobs)]
            return self.client.gather(futures)

        elapsed, values = timed(run)
        check(values, [sizes.spin_s] * sizes.spin_jobs, "dask parallel efficiency")
        return sizes.ideal_spin_wall_s / elapsed


@contextlib.contextmanager
def dask_side() -> Iterator[DaskSide]:
    from distributed import Client, LocalCluster

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield DaskSide(client)
