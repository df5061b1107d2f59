"""CPython's own concurrent.futures tests, run against sockpool's Executor.

The tests are the running interpreter's (`test.test_concurrent_futures`,
or Debian's libpython3.X-testsuite of the same version, which the test
setup installs with apt-get under CI=true as root). They are subclassed,
not copied: `ClusterExecutor` (tests/cpython_executor.py) is how they
build the executor and where their functions live, and scripts they run
in a child interpreter get a two-line prelude that makes the same class
importable there. Every test of the classes that concern a process pool
is either run, or not applicable with the reason below; the ones that
cannot pass on a cluster without pickling are expected failures, named
and explained in the README.

pytest reports each: passed, xfailed (a known difference), skipped (not
applicable, with its reason).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.cpython_executor import ClusterExecutor

from .cluster import ROOT
from .conftest import Cluster

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
PACKAGE = f"libpython{VERSION}-testsuite"
SUITE = "test.test_concurrent_futures"

# Tests that do not apply to a remote executor, and why.
NOT_APPLICABLE = {
    "test_hang_gh83386": "CPython skips it for ProcessPoolExecutor (hangs, gh-83386); it also reads the "
                         "worker's stdout, and needs `multiprocessing` its script never imports",
    "test_processes_terminate": "inspects ProcessPoolExecutor._processes",
    "test_context_manager_shutdown": "builds a futures.ProcessPoolExecutor itself",
    "test_del_shutdown": "builds a futures.ProcessPoolExecutor itself",
    "test_shutdown_no_wait": "builds a futures.ProcessPoolExecutor itself",
    "test_max_workers_too_large": "Windows only",
    "test_killed_child": "kills one of ProcessPoolExecutor._processes",
    "test_traceback": "asserts type(exc) is RuntimeError with ProcessPoolExecutor's private _RemoteTraceback as "
                      "its cause; sockpool raises JobFailed, an instance of RuntimeError with the same args and "
                      "the remote traceback (and it submits a classmethod, a bound method)",
    "test_ressources_gced_in_workers": "passes a multiprocessing.Manager proxy, which only pickling can carry",
    "test_saturation": "counts ProcessPoolExecutor._processes",
    "test_idle_process_reuse_one": "counts ProcessPoolExecutor._processes",
    "test_idle_process_reuse_multiple": "counts ProcessPoolExecutor._processes",
    "test_max_tasks_per_child": "max_tasks_per_child is a local pool's option; a worker's --max-tasks... is its own",
    "test_max_tasks_per_child_defaults_to_spawn_context": "inspects ProcessPoolExecutor._mp_context",
    "test_max_tasks_early_shutdown": "max_tasks_per_child is a local pool's option",
    "test_exit_at_task_unpickle": "about pickle hooks (__reduce__) run while unpickling in the pool process",
    "test_error_at_task_unpickle": "about pickle hooks (__reduce__) run while unpickling in the pool process",
    "test_crash_at_task_unpickle": "about pickle hooks (__reduce__) run while unpickling in the pool process",
    "test_crash_during_result_pickle_on_worker": "about pickle hooks run while pickling a result",
    "test_exit_during_result_pickle_on_worker": "about pickle hooks run while pickling a result",
    "test_error_during_result_unpickle_in_result_handler": "about pickle hooks run while unpickling a result",
    "test_exit_during_result_unpickle_in_result_handler": "about pickle hooks run while unpickling a result",
    "test_shutdown_deadlock_pickle": "about pickle hooks, and joins ProcessPoolExecutor._executor_manager_thread",
    # Python 3.12 and later:
    "test_python_finalization_error": "mocks the thread creation of ProcessPoolExecutor's internals",
    "test_gh105829_should_not_deadlock_if_wakeup_pipe_full": "mocks ProcessPoolExecutor's _ExecutorManagerThread",
}
# Per class: FailingInitializerMixin's one test waits for executor._broken.
NOT_APPLICABLE_IN = {"FailingInitializerMixin": {"test_initializer": "waits for ProcessPoolExecutor._broken"}}

# Tests that apply and fail, because sockpool sends no pickles.
EXPECTED_FAILURES = {
    "test_interpreter_shutdown": "the task prints in the worker's pool process: 'apple' is in the worker's "
                                 "stdout, not the submitting script's (the script does wait for the result)",
    "test_no_stale_references": "submits a bound method (my_object.my_method); sockpool refuses it",
    "test_free_reference": "the task returns an object of a user class (MyObject), which msgpack cannot carry",
    "test_error_during_func_exec_on_worker": "passes an exception class (RuntimeError) as an argument",
}

# The suite's classes that concern a process pool (ThreadPool* and the
# Future-only tests are not about an executor of processes).
# (ProcessPoolShutdownTest and ProcessPoolExecutorTest hold the tests of
# ExecutorShutdownTest and ExecutorTest, which they derive from.)
CLASSES = ["InitializerMixin", "FailingInitializerMixin", "ProcessPoolShutdownTest", "WaitTests",
           "AsCompletedTests", "ProcessPoolExecutorTest", "ExecutorDeadlockTest"]
MIN_PASSING = 31


def _testsuite_dirs() -> list[Path]:
    return [Path(f"/usr/lib/python{VERSION}/test"), Path(f"/usr/local/lib/python{VERSION}/test")]


def _install_testsuite() -> str | None:
    """Install Debian's test suite for this Python under CI as root; the
    reason it cannot be had otherwise."""
    if os.environ.get("CI") != "true":
        return f"{SUITE} is not installed (apt-get install {PACKAGE}; the test setup does it under CI=true)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{SUITE} is not installed, and installing {PACKAGE} needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"apt-get install {PACKAGE} failed: {done.stderr.strip()[-300:]}"
    return None


def _extra_test_paths() -> list[str]:
    """Directories to add to the `test` package's path, so that `test.test_concurrent_futures`
    of the same Python version imports with this interpreter's own `test.support`."""
    return [str(d) for d in _testsuite_dirs() if (d / "test_concurrent_futures.py").exists()
            or (d / "test_concurrent_futures").is_dir()]


def load_suite() -> tuple[Any, list[str]]:
    """The suite's module (package in 3.12+), and the directories it needed."""
    try:
        return importlib.import_module(SUITE), []
    except ImportError:
        pass
    if not _extra_test_paths():
        reason = _install_testsuite()
        if reason is not None:
            pytest.skip(reason, allow_module_level=True)
    extra = _extra_test_paths()
    if not extra:
        pytest.skip(f"{PACKAGE} is installed but holds no test_concurrent_futures", allow_module_level=True)
    import test

    test.__path__.extend(p for p in extra if p not in test.__path__)
    return importlib.import_module(SUITE), extra


suite, EXTRA_PATHS = load_suite()
# About 40 s in all; each test a few seconds at most (the suite's own sleeps).
pytestmark = pytest.mark.slow


def _modules() -> list[Any]:
    modules = [suite]
    if hasattr(suite, "__path__"):  # 3.12+: a package of modules
        for info in pkgutil.iter_modules(suite.__path__):
            modules.append(importlib.import_module(f"{SUITE}.{info.name}"))
    return modules


def find(name: str) -> Any:
    for module in _modules():
        if isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    raise LookupError(f"{SUITE} has no {name}")


BaseTestCase, ExecutorMixin = find("BaseTestCase"), find("ExecutorMixin")

PRELUDE = (
    "import test; test.__path__.extend({paths!r})\n"
    "import concurrent.futures, tests.cpython_executor; "
    "concurrent.futures.ClusterExecutor = tests.cpython_executor.ClusterExecutor\n"
)


@contextlib.contextmanager
def scripts_on_the_cluster(module: Any) -> Iterator[None]:
    """Child interpreters the suite starts import `ClusterExecutor` from
    concurrent.futures as they would import its own executor."""
    original = getattr(module, "assert_python_ok", None)
    if original is None:  # this module starts no child interpreters
        yield
        return

    def assert_python_ok(*args: str, **env: str) -> Any:
        args = tuple(PRELUDE.format(paths=EXTRA_PATHS) + a if i and args[i - 1] == "-c" else a
                     for i, a in enumerate(args))
        return original(*args, SOCKPOOL_BROKER=ClusterExecutor.address or "", PYTHONPATH=str(ROOT), **env)

    module.assert_python_ok = assert_python_ok
    try:
        yield
    finally:
        module.assert_python_ok = original


class ClusterMixin(ExecutorMixin):  # type: ignore[misc, valid-type]
    executor_type = ClusterExecutor
    ctx = "forkserver"  # what mp_context= the suite passes; the workers' pools ignore it

    def get_context(self) -> Any:
        import multiprocessing

        return multiprocessing.get_context(self.ctx)


def not_applicable(class_name: str) -> dict[str, str]:
    return {**NOT_APPLICABLE, **NOT_APPLICABLE_IN.get(class_name, {})}


def _wrap(cls: type, name: str) -> Any:
    """The suite's test method, as run here: skipped, expected to fail, or
    run with its child scripts pointed at the cluster."""
    method = getattr(cls, name)
    reasons = not_applicable(cls.__name__)
    if name in reasons:
        return unittest.skip(f"not applicable: {reasons[name]}")(method)

    def run(self: Any) -> None:
        with scripts_on_the_cluster(sys.modules[cls.__module__]):
            method(self)

    run.__name__ = name
    if name in EXPECTED_FAILURES:
        return unittest.expectedFailure(run)
    return run


def method_names(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if n.startswith("test_") and callable(getattr(cls, n)))


def _make(name: str) -> type:
    base = find(name)
    body = {n: _wrap(base, n) for n in method_names(base)}
    return type(f"Sockpool{name}", (ClusterMixin, base, BaseTestCase), body)


SockpoolInitializerTest = _make("InitializerMixin")
SockpoolFailingInitializerTest = _make("FailingInitializerMixin")
SockpoolProcessPoolShutdownTest = _make("ProcessPoolShutdownTest")
SockpoolWaitTests = _make("WaitTests")
SockpoolAsCompletedTests = _make("AsCompletedTests")
SockpoolProcessPoolExecutorTest = _make("ProcessPoolExecutorTest")
SockpoolExecutorDeadlockTest = _make("ExecutorDeadlockTest")


@pytest.fixture(scope="module", autouse=True)
def cpython_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One broker and one worker of 5 processes (the suite's worker_count)."""
    cluster = Cluster(tmp_path_factory.mktemp("cpython"), "--in-memory")
    try:
        cluster.add_worker(5, "--tasks", "tests.cpython_tasks")
        ClusterExecutor.address = cluster.address
        yield cluster
    finally:
        ClusterExecutor.address = None
        cluster.stop()


def test_every_test_of_the_suite_is_run_or_explained():
    """Each test is applicable (and expected to pass or known to fail) or
    not applicable with a reason, and at least MIN_PASSING are expected
    to pass."""
    tests = {(name, n) for name in CLASSES for n in method_names(find(name))}
    names = {n for _, n in tests}
    assert set(EXPECTED_FAILURES) <= names
    skipped = {(c, n) for c, n in tests if n in not_applicable(c)}
    assert not {n for _, n in skipped} & set(EXPECTED_FAILURES)
    applicable = tests - skipped
    passing = {(c, n) for c, n in applicable if n not in EXPECTED_FAILURES}
    print(f"\nCPython {VERSION} {SUITE}: {len(applicable)} applicable, {len(passing)} expected to pass, "
          f"{len(applicable) - len(passing)} known failures, {len(skipped)} not applicable")
    assert len(passing) >= MIN_PASSING, sorted(passing)
