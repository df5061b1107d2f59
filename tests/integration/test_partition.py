"""A worker cut off from the broker, on test hosts made with network namespaces.

Two namespaces joined by a veth pair stand for two machines: the broker,
a healthy worker and the client on one, the worker to be cut off on the
other. Traffic stays between the namespaces this test creates (link-local
addresses on the veth pair) and is gone when it deletes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from .cluster import Proc, environment, python_command

HOST_A = "169.254.77.1"
HOST_B = "169.254.77.2"
HEARTBEAT_S = 0.3
WAIT_S = 60


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = uuid.uuid4().hex[:6]
    a, b = f"sp-a-{tag}", f"sp-b-{tag}"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        sh("ip", "link", "set", f"va{tag}", "netns", a)
        sh("ip", "link", "set", f"vb{tag}", "netns", b)
        for ns, dev, addr in ((a, f"va{tag}", HOST_A), (b, f"vb{tag}", HOST_B)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def in_ns(ns: str, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def start_in(ns: str, args: list[str], log: Path) -> Proc:
    return Proc(in_ns(ns, args), log)


def wait_for_line(proc: Proc, prefix: str) -> str:
    assert proc.popen.stdout is not None
    os.set_blocking(proc.popen.stdout.fileno(), False)
    deadline, buffer = time.monotonic() + 20, b""
    while time.monotonic() < deadline:
        buffer += proc.popen.stdout.read() or b""
        for line in buffer.decode().splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
        time.sleep(0.02)
    raise TimeoutError(f"no {prefix!r} line; log:\n{proc.log()}")


def veth_in(ns: str) -> str:
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, timeout=20).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return next(name for name in names if name.startswith("vb"))


def wait_for_log(proc: Proc, text: str, timeout_s: float = WAIT_S, times: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.log().count(text) < times:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in {proc.log_path.name}:\n{proc.log()}")
        time.sleep(0.05)


def test_cut_off_worker_jobs_are_requeued_and_its_late_results_dropped(namespaces, tmp_path):
    ns_a, ns_b = namespaces
    broker = start_in(ns_a, python_command(
        "broker", "start", "--host", HOST_A, "--port", "0", "--in-memory",
        "--heartbeat-s", str(HEARTBEAT_S), "--log-level", "debug"), tmp_path / "broker.log")
    procs = [broker]
    try:
        address = wait_for_line(broker, "listening on ")
        worker_args = ["worker", "join", address, "--processes", "1", "--tasks", "tests.tasks", "--log-level", "debug"]
        # The worker to be cut off joins first, so it takes the first jobs.
        far = start_in(ns_b, python_command(*worker_args, "--name", "far"), tmp_path / "far.log")
        procs.append(far)
        wait_for_log(broker, "worker far joined")
        near = start_in(ns_a, python_command(*worker_args, "--name", "near"), tmp_path / "near.log")
        procs.append(near)
        wait_for_log(broker, "worker near joined")

        args = [str(i) for i in range(12)]
        submit = subprocess.Popen(
            in_ns(ns_a, python_command("sockpool.client", "--broker", address, "--json", "--chunksize", "1",
                                       "tests.tasks:slow_square", *args)),
            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        time.sleep(0.6)  # the far worker is running a job now
        cut = veth_in(ns_b)
        sh("ip", "-n", ns_b, "link", "set", cut, "down")
        wait_for_log(broker, "missed its heartbeats")
        out, err = submit.communicate(timeout=WAIT_S)
        assert submit.returncode == 0, err
        assert json.loads(out) == [int(a) ** 2 for a in args]

        # The far worker notices the silence and comes back; what it finished
        # meanwhile was for a connection the broker gave up on, and is dropped.
        sh("ip", "-n", ns_b, "link", "set", cut, "up")
        wait_for_log(broker, "worker far joined", times=2)
        wait_for_log(far, "reconnecting")
    finally:
        for proc in procs:
            proc.stop()
