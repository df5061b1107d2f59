"""The docker-compose cluster, brought up for real. Opt-in: SOCKPOOL_COMPOSE_TEST=1 or CI=true.

Everything happens in run.sh beside this file, which can also be run on its
own: it installs and starts a private dockerd, builds the image on a
debootstrapped base, runs a broker and three workers, and checks them. It
runs once for this module; each test below reads one of its checks from the
output. Needs root and apt (or an installed docker.io, docker-compose and
debootstrap); takes about 1.5 minutes cold, less once its cache is warm.
"""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

RUN_SH = Path(__file__).with_name("run.sh")
RUN_TIMEOUT_S = 840
SKIP_EXIT = 77  # run.sh: this machine cannot run it

pytestmark = [pytest.mark.compose, pytest.mark.timeout(RUN_TIMEOUT_S + 180)]


def why_not() -> str | None:
    """Why this machine will not run the cluster, or None if it will."""
    # CI runs it wherever the machine allows; developers opt in.
    if os.environ.get("SOCKPOOL_COMPOSE_TEST") != "1" and os.environ.get("CI") != "true":
        return "opt-in: set SOCKPOOL_COMPOSE_TEST=1 (CI=true does too) to run the compose cluster for real"
    if os.geteuid() != 0:
        return "needs root to install and start dockerd"
    if shutil.which("dockerd") is None and shutil.which("apt-get") is None:
        return "no dockerd, and no apt-get to install docker.io"
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """run.sh's output, once it has finished; fails only if it never did."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # A cold run takes longer than faulthandler_timeout; its stack dump would
    # be noise, and the waits below have their own timeouts.
    faulthandler.cancel_dump_traceback_later()
    log_path = tmp_path_factory.mktemp("compose") / "run.log"
    with open(log_path, "w") as log:
        # Its own session, so a timeout can signal it and its dockerd together.
        proc = subprocess.Popen(["bash", str(RUN_SH)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # SIGTERM: run.sh's EXIT trap takes the cluster down and stops dockerd.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            pytest.fail(f"run.sh took over {RUN_TIMEOUT_S} s:\n{log_path.read_text()}")
    output = log_path.read_text()
    print(output)
    if proc.returncode == SKIP_EXIT:
        pytest.skip("run.sh: " + " ".join(re.findall(r"^SKIP: (.*)$", output, re.M)))
    return f"{output}\nrun.sh exited {proc.returncode}\n"


def check(output: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, output, re.M)
    assert match, f"run.sh did not report /{pattern}/:\n{output}"
    return match


def test_every_check_passed(run: str) -> None:
    check(run, r"^== ALL CHECKS PASSED")
    check(run, r"^run.sh exited 0$")


def test_submit_through_the_cluster(run: str) -> None:
    check(run, r"^square: 1 4 9 16 25$")


def test_killing_a_worker_mid_job_loses_nothing(run: str) -> None:
    check(run, r"^killed worker container \w+ while the submit was running")
    got = check(run, r"^sleep: (\d+) of (\d+) results")
    assert got[1] == got[2], got[0]
    check(run, r"^broker saw [1-9]\d* worker\(s\) leave$")


def test_down_leaves_nothing_running(run: str) -> None:
    check(run, r"^nothing left running$")


def test_dockerd_was_stopped(run: str) -> None:
    workdir = check(run, r"^workdir (\S+)$")[1]
    assert not Path(workdir).exists(), f"run.sh left {workdir} behind"
    pid = int(check(run, r"^cleanup: stopping dockerd (\d+)$")[1])
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    assert b"dockerd" not in command, f"dockerd {pid} is still running"
