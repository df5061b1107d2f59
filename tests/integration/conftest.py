from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from .cluster import Proc, start_broker, start_worker, wait_for_processes


class Cluster:
    """A broker and the workers a test adds to it, all stopped at teardown."""

    def __init__(self, log_dir: Path, *broker_args: str) -> None:
        self.log_dir = log_dir
        if "--unserved-grace-s" not in broker_args:
            # A task nobody serves fails 2 s after its submit here, not the
            # default 10 s: the tests' workers have all joined by then.
            broker_args = (*broker_args, "--unserved-grace-s", "2")
        self.broker, self.address = start_broker(log_dir, *broker_args)
        self.workers: list[Proc] = []
        self.expected_processes = 0

    def add_worker(self, processes: int | None = 2, *extra: str, name: str | None = None, wait: bool = True) -> Proc:
        """Start a worker (processes=None: let it size its pool) and wait until it joined."""
        self.expected_processes += processes or len(os.sched_getaffinity(0))
        proc = start_worker(self.log_dir, self.address, processes, *extra, name=name or f"w{len(self.workers)}")
        self.workers.append(proc)
        if wait:
            wait_for_processes(self.address, self.expected_processes)
        return proc

    def logs(self) -> str:
        return "\n".join(f"== {p.log_path.name}\n{p.log()}" for p in [self.broker, *self.workers])

    def stop(self) -> None:
        for proc in [*self.workers, self.broker]:
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose broker serves metrics and the dashboard on a free port."""
    c = Cluster(tmp_path, "--metrics-port", "0")
    try:
        yield c
    finally:
        c.stop()
