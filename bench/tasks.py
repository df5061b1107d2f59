"""Task functions for the benchmark, served with `worker join --tasks bench.tasks`.

The local pool and Dask run the very same functions, so every side does
identical work per job.
"""

from __future__ import annotations

import time


def square(x: float) -> float:
    return x * x


def spin(seconds: float) -> float:
    """Burn `seconds` of CPU time (not wall time: a sleeping job would make
    parallel efficiency look perfect on any number of cores)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds


def size(data: bytes) -> int:
    """The length of a large argument: the job's cost is moving the bytes."""
    return len(data)


def blob(n: int) -> bytes:
    """A large result of `n` bytes."""
    return bytes(n)


def clock(_: object = None) -> float:
    """When the job started, as Unix time: the delayed-job lateness probe."""
    return time.time()


def unlimited_spin(seconds: float) -> float:
    """`spin` under another name: the same work with no limit on it, as the
    reference for `spin` under a limit (bench/control.py)."""
    return spin(seconds)
