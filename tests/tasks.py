"""Task functions the tests load into workers with `--tasks tests.tasks`."""

from __future__ import annotations

import os
import time
from typing import Any


def add(a: float, b: float) -> float:
    return a + b


def cube(x: int) -> int:
    return x * x * x


def fail(message: str) -> None:
    raise ValueError(message)


def pid(_: Any = None) -> int:
    """The pool process that ran the job."""
    return os.getpid()


def busy(seconds: float) -> int:
    """Sleep, then report which process slept."""
    time.sleep(seconds)
    return os.getpid()


def greet(name: str, greeting: str = "hello") -> str:
    return f"{greeting} {name}"


def unencodable(_: Any = None) -> object:
    return object()


def _private() -> None:
    """Not a task: names starting with an underscore are never served."""


def flaky(marker_dir: str, key: str, failures: int) -> str:
    """Fail the first `failures` runs for `key`, then succeed; counts runs on disk."""
    runs = _record_run(marker_dir, key)
    if runs <= failures:
        raise RuntimeError(f"{key}: failing run {runs} of {failures}")
    return f"{key} ok after {runs} runs"


def slow_square(x: float, seconds: float = 0.2, marker_dir: str = "") -> float:
    """x * x after a pause; with `marker_dir`, leaves a mark per run."""
    if marker_dir:
        _record_run(marker_dir, f"sq{x}")
    time.sleep(seconds)
    return x * x


def _record_run(marker_dir: str, key: str) -> int:
    """Append one run of `key` to its file; returns how many runs there were."""
    path = os.path.join(marker_dir, key)
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        return len(f.read())


def exit_process(code: int = 3) -> None:
    """End the pool process at once, as a crashing extension would."""
    os._exit(code)


def kill_process(signum: int = 9) -> None:
    """Kill the pool process with a signal (9: SIGKILL, 11: SIGSEGV)."""
    os.kill(os.getpid(), signum)


def hang(seconds: float = 3600.0) -> None:
    """Never finish in any test's lifetime."""
    time.sleep(seconds)


def hang_noting_pid(path: str, seconds: float = 3600.0) -> None:
    """Write this pool process's pid to `path`, then hang: tests check that
    the process is gone once its worker has left."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)


def hang_first_then_fail(marker_dir: str, key: str) -> None:
    """First run: write the pool process's pid to `key`.pid and hang; every
    later run fails. Runs are counted in `key`."""
    runs = _record_run(marker_dir, key)
    if runs == 1:
        hang_noting_pid(os.path.join(marker_dir, f"{key}.pid"))
    raise RuntimeError(f"{key}: failing run {runs}")


def kill_worker(seconds: float = 0.5) -> None:
    """Kill the whole worker (the pool's parent) after a pause, so that its
    heartbeat has reported this job as running: a poison job."""
    time.sleep(seconds)
    # Pool processes are forked by the forkserver, whose parent is the worker.
    with open(f"/proc/{os.getppid()}/stat") as f:
        worker_pid = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(worker_pid, 9)


def pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Its arguments as a tuple, with their types: for round trips."""
    return (a, b)


def types_of(*args: Any, **kwargs: Any) -> tuple[list[str], dict[str, str]]:
    """The type names the task was given, as the pool process saw them."""
    return [type(a).__name__ for a in args], {k: type(v).__name__ for k, v in kwargs.items()}


def power(base: int, exponent: int) -> int:
    return base**exponent


def raise_with(*args: Any) -> None:
    """Raise RuntimeError with exactly these args."""
    raise RuntimeError(*args)


def exit_with(code: Any = 1) -> None:
    """sys.exit in the task, as a script would."""
    import sys

    sys.exit(code)


async def async_square(x: float, pause_s: float = 0.0) -> float:
    """An `async def` task: awaited to completion in the pool process."""
    import asyncio

    await asyncio.sleep(pause_s)
    return x * x


async def async_fail(message: str) -> None:
    import asyncio

    await asyncio.sleep(0)
    raise KeyError(message)


async def async_slow_square(x: float) -> float:
    """x * x after 5 ms of awaiting."""
    import asyncio

    await asyncio.sleep(0.005)
    return x * x


def tuple_or_fail(x: int) -> tuple[int, int]:
    """(x, 2**70 + x), except for 3, which fails with a tuple in its args."""
    if x == 3:
        raise ValueError((x, "three"))
    return (x, 2**70 + x)


MARKER = "unset"


def set_marker(value: str) -> None:
    """An initializer: leaves `value` in this pool process."""
    global MARKER
    MARKER = value


def get_marker(_: Any = None) -> str:
    return MARKER


def failing_initializer() -> None:
    raise OSError("no database here")


def total(*values: float) -> float:
    """Many positional arguments: in a large submit frame the broker keeps
    them packed (broker/admission.py), and they must arrive unchanged."""
    return sum(values)


def concurrency_probe(marker_dir: str, seconds: float = 0.3) -> int:
    """Hold a file in `marker_dir`/running while running, and return how many
    probes were running (this one included) when it started. The count is
    taken under a lock on the shared directory, so probes on different
    workers of one machine see each other exactly."""
    import fcntl

    running = os.path.join(marker_dir, "running")
    os.makedirs(running, exist_ok=True)
    me = os.path.join(running, f"{os.getpid()}-{time.monotonic_ns()}")
    with open(os.path.join(marker_dir, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        open(me, "w").close()
        # A probe whose process was killed (stopped, or abandoned when its
        # worker lost the broker) left its file behind: it runs no more.
        count = sum(1 for name in os.listdir(running) if _process_runs(int(name.split("-")[0])))
        with open(os.path.join(marker_dir, "seen"), "a") as seen:
            seen.write(f"{count}\n")
    try:
        time.sleep(seconds)
    finally:
        os.remove(me)
    return count


def mark_then_sleep(marker_dir: str, key: str, seconds: float = 0.0) -> str:
    """Record a run of `key`, then sleep; returns `key` and the run count."""
    runs = _record_run(marker_dir, key)
    time.sleep(seconds)
    return f"{key}:{runs}"


def _process_runs(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def started_at(_: Any = None) -> float:
    """When the job started, in Unix seconds."""
    return time.time()


def worker_pid(_: Any = None) -> int:
    """The pid of the worker whose pool ran this job (the forkserver's parent)."""
    with open(f"/proc/{os.getppid()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def note(path: str, key: str, seconds: float = 0.0) -> str:
    """Append `key` and the time it ran to the file at `path`, then pause."""
    with open(path, "a") as f:
        f.write(f"{key} {time.time():.6f}\n")
    time.sleep(seconds)
    return key


def digest(data: bytes) -> str:
    """The SHA-256 of a bytes argument: a large argument must arrive intact."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def page_faults_reusing(size: int, held: int) -> int:
    """Page faults of making `held` buffers of `size` bytes again after
    the same were made and freed: about none where freed memory is kept
    for reuse (worker/heap.py), every page of them where it went back."""
    import resource

    faults = 0
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffers = [b"y" * size for _ in range(held)]
        del buffers
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults
