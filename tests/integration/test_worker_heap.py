"""worker/heap.py: the worker's pool processes keep freed large buffers for
the next job (glibc), and a user's own malloc settings win. Real worker."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from sockpool.client import Client

from .cluster import ROOT, environment

WAIT_S = 30.0
MIB = 1 << 20

try:
    GLIBC = hasattr(ctypes.CDLL(None), "mallopt")
except OSError:
    GLIBC = False


@pytest.mark.skipif(not GLIBC, reason="only glibc's malloc is tuned")
def test_a_pool_process_reuses_the_pages_of_freed_large_buffers(cluster):
    cluster.add_worker(1, "--tasks", "tests.tasks")
    with Client(cluster.address) as client:
        # Four 1 MiB buffers made again: 1,024 pages if they had gone back.
        faults = client.submit("tests.tasks:page_faults_reusing", MIB, 4).result(WAIT_S)
    assert faults < 64, cluster.logs()


def _faults_in_a_fresh_process(env: dict[str, str]) -> int:
    code = (
        "from sockpool.worker.heap import keep_freed_buffers; from tests.tasks import page_faults_reusing; "
        f"keep_freed_buffers(); print(page_faults_reusing({MIB}, 4))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="only glibc's malloc is tuned")
def test_the_users_own_malloc_settings_win():
    assert _faults_in_a_fresh_process(environment()) < 64
    # Told to hand back anything over 128 KiB at once, as glibc was before
    # it slid its thresholds: every page faults in again.
    told = {**environment(), "MALLOC_TRIM_THRESHOLD_": str(128 * 1024), "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    assert _faults_in_a_fresh_process(told) > 4 * 200
