"""The PostgreSQL store (issue #15): durable throughput against SQLite's,
and failover time (kill -9 of the active broker to the first result from
the new one). Skipped, saying why, where no PostgreSQL server binaries or
no psycopg are installed.

The database runs with fsync on, as a durable store would; the brokers
and the database share this machine.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bench import workloads as w
from sockpool.client import Client
from tests.integration.cluster import Proc, start_broker, start_worker, wait_for_processes
from tests.integration.postgres import PostgresServer, server_bin_dir

Samples = dict[str, dict[str, list[Any]]]


def unavailable() -> str | None:
    """Why the PostgreSQL rows cannot run here, or None."""
    if server_bin_dir() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


def run_postgres(sizes: w.Sizes, log_dir: Path, samples: Samples) -> None:
    why = unavailable()
    if why is not None:
        click.echo(f"skipping the PostgreSQL rows: {why}", err=True)
        return
    bin_dir = server_bin_dir()
    assert bin_dir is not None
    server = PostgresServer(bin_dir, fsync=True)
    try:
        click.echo("postgresql store ...", err=True)
        throughput(sizes, log_dir, server, samples)
        click.echo("failover ...", err=True)
        failover(sizes, log_dir, server, samples)
    finally:
        server.stop(remove=True)


def throughput(sizes: w.Sizes, log_dir: Path, server: PostgresServer, samples: Samples) -> None:
    """Independent jobs on a durable broker, PostgreSQL store against SQLite, interleaved."""
    sides = {
        "sockpool": lambda d: ["--store", server.create_database("bench_throughput")],
        "sqlite": lambda d: ["--data-dir", str(d / "data")],
    }
    for _ in range(sizes.runs):
        for side, store_args in sides.items():
            side_dir = Path(tempfile.mkdtemp(prefix=f"pg-{side}-", dir=log_dir))
            broker, address = start_broker(side_dir, *store_args(side_dir))
            worker = start_worker(side_dir, address, 2, "--tasks", "bench.tasks")
            try:
                wait_for_processes(address, 2)
                with Client(address) as client:
                    w.sockpool_independent(client, 500)
                    samples["postgres"][side].append(w.sockpool_independent(client, sizes.independent_jobs))
            finally:
                worker.stop()
                broker.stop()


def failover(sizes: w.Sizes, log_dir: Path, server: PostgresServer, samples: Samples) -> None:
    """Seconds from kill -9 of the active broker to a result from the new one."""
    url = server.create_database("bench_failover")
    base = Path(tempfile.mkdtemp(prefix="failover-", dir=log_dir))
    brokers: list[Proc] = []
    addresses: list[str] = []

    def start(i: int, port: int = 0) -> Proc:
        d = base / f"b{i}"
        d.mkdir(exist_ok=True)
        proc, address = start_broker(d, "--store", url, "--name", f"b{i}", port=port)
        if len(addresses) <= i:
            addresses.append(address)
        return proc

    for i in range(2):
        brokers.append(start(i))
        if i == 0:
            _wait(lambda: _epochs(brokers[0]), "the first broker leading")
    address = ",".join(addresses)
    worker = start_worker(base, address, 2, "--tasks", "bench.tasks")
    try:
        wait_for_processes(address, 2)
        with Client(address) as client:
            client.submit("bench.tasks:square", 1).result(w.WAIT_S)
            for _ in range(max(sizes.failovers, sizes.runs)):
                active = max(range(2), key=lambda i: max(_epochs(brokers[i]), default=0))
                killed_at = time.monotonic()
                brokers[active].kill()
                assert client.submit("bench.tasks:square", 7).result(w.WAIT_S) == 49
                samples["failover"]["sockpool"].append(time.monotonic() - killed_at)
                port = int(addresses[active].rsplit(":", 1)[1])
                brokers[active].stop()
                brokers[active] = start(active, port)
    finally:
        worker.stop()
        for proc in brokers:
            proc.stop()


def _epochs(proc: Proc) -> list[int]:
    return [int(m) for m in re.findall(r"active \(epoch (\d+)\)", proc.log())]


def _wait(condition: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)
