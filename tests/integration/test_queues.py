"""Queues, priorities and delayed jobs with real broker and worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sockpool.client import Client
from sockpool.protocol import ConnectionLost

from .cluster import start_broker, start_worker, wait_for_processes
from .test_durability import WAIT_S, free_port, wait_until


def lines(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    return [(key, float(at)) for key, at in (line.split() for line in path.read_text().splitlines())]


def test_gpu_and_default_workers_each_get_only_their_jobs(cluster):
    gpu = cluster.add_worker(1, "--tasks", "tests.tasks", "--queues", "gpu", name="gpu")
    default = cluster.add_worker(1, "--tasks", "tests.tasks", name="cpu")
    with Client(cluster.address) as client:
        on_gpu = [client.with_options(queue="gpu").submit("tests.tasks:worker_pid") for _ in range(20)]
        on_default = [client.submit("tests.tasks:worker_pid") for _ in range(20)]
        assert {f.result(WAIT_S) for f in on_gpu} == {gpu.popen.pid}
        assert {f.result(WAIT_S) for f in on_default} == {default.popen.pid}


def test_a_worker_takes_its_second_queue_when_the_first_is_empty(cluster):
    both = cluster.add_worker(1, "--tasks", "tests.tasks", "--queues", "gpu,default", name="both")
    with Client(cluster.address, queue="default") as client:
        assert client.submit("tests.tasks:worker_pid").result(WAIT_S) == both.popen.pid


def test_a_high_priority_job_overtakes_a_deep_queue(cluster, tmp_path):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    order = tmp_path / "order"
    with Client(cluster.address) as client:
        backlog = [client.submit("tests.tasks:note", str(order), f"low{i}", 0.005) for i in range(400)]
        assert client.wait_accepted(WAIT_S)
        wait_until(lambda: len(lines(order)) >= 5, what="the backlog to start")
        urgent = client.with_options(priority=9).submit("tests.tasks:note", str(order), "urgent")
        assert urgent.result(WAIT_S) == "urgent"
        for f in backlog:
            f.result(WAIT_S)
    keys = [key for key, _ in lines(order)]
    position = keys.index("urgent")
    # It ran behind what the worker had already prefetched, not behind the
    # hundreds the broker still held.
    assert position < 200, f"the urgent job ran {position}th"
    assert keys.count("urgent") == 1


def test_a_delayed_job_survives_a_broker_kill_and_runs_once_after_its_time(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks")
    order = tmp_path / "order"
    try:
        wait_for_processes(address, 1)
        with Client(address) as client:
            submitted = time.time()
            future = client.with_options(delay=2.0).submit("tests.tasks:note", str(order), "later")
            assert client.wait_accepted(WAIT_S)
            broker.kill()  # SIGKILL: only what was committed survives
            assert lines(order) == []
            broker, address = start_broker(tmp_path, port=port)
            assert future.result(WAIT_S) == "later"
        wait_until(lambda: broker.popen.poll() is None, what="broker alive")
        ran = lines(order)
        assert [key for key, _ in ran] == ["later"]
        assert ran[0][1] >= submitted + 2.0
    finally:
        worker.stop()
        broker.stop()


def cron_at(t: float) -> str:
    """A 6-field cron expression (seconds first) matching the UTC second of `t` once."""
    when = time.gmtime(t)
    return f"{when.tm_sec} {when.tm_min} {when.tm_hour} {when.tm_mday} {when.tm_mon} *"


def outcome(client: Client, name: str) -> dict | None:
    """The schedule's last outcome; None while the broker is away."""
    try:
        return next(s["last_outcome"] for s in client.schedules() if s["name"] == name)
    except ConnectionLost:
        return None


def test_a_pause_survives_a_broker_kill(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks")
    try:
        wait_for_processes(address, 1)
        with Client(address, operator=True) as client:
            client.pause_queue("default")
            broker.kill()
            broker, address = start_broker(tmp_path, port=port)
            wait_for_processes(address, 1)
            future = client.submit("tests.tasks:add", 1, 2)
            assert client.wait_accepted(WAIT_S)
            wait_until(lambda: client.status()["queues"]["default"]["ready"] == 1, what="the job queued")
            assert not future.done() and client.status()["queues"]["default"]["paused"]
            client.resume_queue("default")
            assert future.result(WAIT_S) == 3
    finally:
        worker.stop()
        broker.stop()


@pytest.mark.slow
def test_schedules_fire_exactly_once_across_a_broker_kill(tmp_path):
    port = free_port()
    broker, address = start_broker(tmp_path, port=port)
    worker = start_worker(tmp_path, address, 1, "--tasks", "tests.tasks")
    runs = tmp_path / "runs"
    try:
        wait_for_processes(address, 1)
        with Client(address, operator=True) as client:
            first, second = time.time() + 2, time.time() + 4.5
            client.add_schedule("before", cron_at(first), "tests.tasks:note", str(runs), "before")
            client.add_schedule("during", cron_at(second), "tests.tasks:note", str(runs), "during")
            wait_until(lambda: (outcome(client, "before") or {}).get("outcome") == "ok", what="the first firing")
            client.pause_queue("unused")  # its reply comes after the commit of everything before it
            broker.kill()  # SIGKILL; the second firing falls due while the broker is down
            wait_until(lambda: time.time() > second + 0.5, what="the second fire time")
            broker, address = start_broker(tmp_path, port=port)
            wait_until(lambda: (outcome(client, "during") or {}).get("outcome") == "ok", what="the missed firing")
            rows = {s["name"]: s for s in client.schedules()}
        assert sorted(key for key, _ in lines(runs)) == ["before", "during"]
        assert rows["during"]["last_outcome"]["fire"] == int(second)
        assert rows["before"]["next_fire"] is None or rows["before"]["next_fire"] > time.time() + 86400
    finally:
        worker.stop()
        broker.stop()


def test_status_and_metrics_show_each_queue(observed):
    from .test_observe import scrape, status_of

    observed.add_worker(1, "--tasks", "tests.tasks", "--queues", "default,gpu", name="both")
    with Client(observed.address, operator=True) as client:
        client.pause_queue("gpu")
        waiting = [client.with_options(queue="gpu").submit("tests.tasks:add", i, 1) for i in range(3)]
        assert client.wait_accepted(WAIT_S)
        assert [client.submit("tests.tasks:add", i, 1).result(WAIT_S) for i in range(4)] == [1, 2, 3, 4]
        samples = scrape(observed.broker.metrics_address)
        assert samples[("sockpool_queue_jobs", (("queue", "gpu"), ("state", "ready")))] == 3
        assert samples[("sockpool_queue_paused", (("queue", "gpu"),))] == 1
        assert samples[("sockpool_queue_paused", (("queue", "default"),))] == 0
        assert samples[("sockpool_queue_completed_total", (("queue", "default"),))] == 4
        text = status_of(observed.address)
        gpu_line = next(line for line in text.splitlines() if line.startswith("gpu "))
        assert gpu_line.split()[1] == "3" and gpu_line.endswith("paused")
        report = status_of(observed.address, "--json")
        assert report["queues"]["gpu"]["oldest_wait_s"] >= 0 and report["queues"]["default"]["completed"] == 4
        client.resume_queue("gpu")
        assert [f.result(WAIT_S) for f in waiting] == [1, 2, 3]


def test_executor_and_submit_cli_take_queue_priority_and_delay(cluster):
    from sockpool.client import Executor
    from tests.tasks import worker_pid

    from .cluster import run_submit

    gpu = cluster.add_worker(1, "--tasks", "tests.tasks", "--queues", "gpu", name="gpu")
    with Executor(cluster.address, queue="gpu", priority=5) as executor:
        assert set(executor.map(worker_pid, range(5))) == {gpu.popen.pid}
    started = time.monotonic()
    done = run_submit("--broker", cluster.address, "--queue", "gpu", "--priority", "2", "--delay", "1s",
                      "tests.tasks:cube", "2", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "27"] and time.monotonic() - started >= 1.0
    refused = run_submit("--broker", cluster.address, "--at", "2026-12-24T18:00:00", "tests.tasks:cube", "2")
    assert refused.returncode == 2 and "time zone" in refused.stderr
    refused = run_submit("--broker", cluster.address, "--queue", "no spaces", "tests.tasks:cube", "2")
    assert refused.returncode == 2 and "queue names" in refused.stderr


def test_broker_pause_and_schedule_commands(cluster):
    from .cluster import run_module

    def broker(*args: str):
        return run_module("sockpool.broker", *args, "--broker", cluster.address)

    done = broker("pause", "gpu")
    assert done.returncode == 0 and "gpu paused" in done.stdout, done.stderr
    added = broker("schedule", "add", "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--queue", "batch",
                   "nightly", "tests.tasks:add", "1", "2")
    assert added.returncode == 0 and "next firing" in added.stdout, added.stderr
    bad = broker("schedule", "add", "--cron", "61 * * * *", "oops", "tests.tasks:add")
    assert bad.returncode == 1 and "Bad minute" in bad.stderr
    listed = broker("schedule", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["queue"], row["timezone"], row["args"]) == ("nightly", "batch", "Europe/Paris", [1, 2])
    assert row["next_fire"] > time.time()
    assert broker("schedule", "pause", "nightly").returncode == 0
    assert "paused" in broker("schedule", "list").stdout
    assert broker("schedule", "resume", "nightly").returncode == 0
    assert broker("schedule", "remove", "nightly").returncode == 0
    assert broker("schedule", "list").stdout.strip() == "no schedules"
    assert broker("resume", "gpu").returncode == 0
    with Client(cluster.address) as plain:  # not the operator
        with pytest.raises(ValueError, match="operator"):
            plain.pause_queue("default")
        assert not plain.status()["queues"]["default"]["paused"]


def test_async_client_takes_queue_priority_and_delay(cluster):
    import asyncio

    from sockpool import AsyncClient

    gpu = cluster.add_worker(1, "--tasks", "tests.tasks", "--queues", "gpu", name="gpu")

    async def main() -> tuple[int, int, float]:
        async with AsyncClient(cluster.address, queue="gpu") as client:
            on_gpu = await client.submit("tests.tasks:worker_pid")
            started = time.time()
            delayed = await client.with_options(priority=3, delay=0.5).submit("tests.tasks:worker_pid")
            return on_gpu, delayed, time.time() - started

    on_gpu, delayed, waited = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert on_gpu == delayed == gpu.popen.pid and waited >= 0.5
