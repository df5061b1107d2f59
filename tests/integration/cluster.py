"""Real broker and worker processes on free loopback ports, for the tests.

The broker binds port 0 and prints the port it got; we read that line
instead of sleeping. Every wait has a deadline, and teardown terminates,
waits with a timeout, then kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from sockpool.client import Client

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0


def python_command(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # The tests say what each process gets; nothing leaks in from the shell.
    for name in ("SOCKPOOL_BROKER", "SOCKPOOL_SECRET_FILE", "SOCKPOOL_TLS_CA"):
        env.pop(name, None)
    return env


class Proc:
    """A child process whose stderr goes to a log file we can read back."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
        cwd: Path = ROOT, base_env: dict[str, str] | None = None, new_session: bool = False,
    ) -> None:
        """`env` adds to `base_env`, which is `environment()` unless given.
        `new_session`: the process leads a process group of its own (its
        pid is the group id), for signals sent to a whole group."""
        self.args = args
        self.log_path = log_path
        self.metrics_address: str | None = None
        self._log: IO[bytes] = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env={**(environment() if base_env is None else base_env), **(env or {})},
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, start_new_session=new_session,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout_s)
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(10)


def start_broker(log_dir: Path, *extra: str, port: int = 0) -> tuple[Proc, str]:
    """Start `python -m sockpool.broker start` (durable, its data in log_dir/data unless
    `extra` says otherwise); returns it and its address once it listens.

    With `--metrics-port` among `extra`, also waits for the 'metrics on'
    line and keeps that address as `proc.metrics_address`.
    """
    explicit = {"--in-memory", "--data-dir", "--store"}
    storage = [] if explicit & set(extra) else ["--data-dir", str(log_dir / "data")]
    args = python_command("sockpool.broker", "start", "--port", str(port), "--log-level", "debug", *storage, *extra)
    proc = Proc(args, log_dir / "broker.log")
    address = read_announcements(proc, "--metrics-port" in extra)
    return proc, address


def read_announcements(proc: Proc, metrics: bool) -> str:
    """Wait for a starting broker's 'listening on' line (and 'metrics on',
    kept as `proc.metrics_address`); returns the listening address."""
    assert proc.popen.stdout is not None
    os.set_blocking(proc.popen.stdout.fileno(), False)
    wanted = ["listening on ", *(["metrics on "] if metrics else [])]
    deadline = time.monotonic() + START_TIMEOUT_S
    buffer = b""
    while time.monotonic() < deadline:
        chunk = proc.popen.stdout.read()
        if chunk:
            buffer += chunk
            found: dict[str, str] = {}
            for line in buffer.decode(errors="replace").splitlines():
                for prefix in wanted:
                    if line.startswith(prefix):
                        found[prefix] = line.removeprefix(prefix).strip()
            if len(found) == len(wanted):
                proc.metrics_address = found.get("metrics on ")
                return found["listening on "]
        if proc.popen.poll() is not None:
            break
        time.sleep(0.02)
    log = proc.log()
    proc.stop()
    raise RuntimeError(f"broker did not start: {buffer!r}\n{log}")


def start_worker(
    log_dir: Path, address: str, processes: int | None = 2, *extra: str, name: str = "w", new_session: bool = False
) -> Proc:
    sizing = ["--processes", str(processes)] if processes else []
    args = python_command("sockpool.worker", "join", address, *sizing, "--name", name, "--log-level", "debug", *extra)
    return Proc(args, log_dir / f"worker-{name}.log", new_session=new_session)


def wait_until_stopped(pid: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until every thread of `pid` is stopped (state T), as it is soon
    after a SIGSTOP: kill() returns before a thread running on another
    core has stopped, and that thread may still read and answer a frame."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                # The state follows the name in parentheses, which may hold spaces.
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended meanwhile
        if states and all(state in "tT" for state in states):
            return
        time.sleep(0.005)
    raise TimeoutError(f"process {pid} did not stop within {timeout_s} s")


def wait_for_processes(address: str, processes: int, timeout_s: float = START_TIMEOUT_S, **client_options: Any) -> None:
    """Wait until the broker reports at least `processes` worker processes joined.

    `client_options` go to Client (secret_file=, tls_ca=) for a broker that needs them.
    """
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        with Client(address, connect_timeout_s=5, **client_options) as client:
            seen = client.cluster_processes
        if seen >= processes:
            return
        time.sleep(0.05)
    raise TimeoutError(f"only {seen} of {processes} worker processes joined within {timeout_s} s")


def run_submit(*args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("sockpool.client", *args, timeout_s=timeout_s, env=env)


def run_module(
    module: str, *args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m MODULE ARGS...` to completion, capturing its output."""
    return subprocess.run(
        python_command(module, *args),
        cwd=ROOT, env={**environment(), **(env or {})}, capture_output=True, text=True, timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
