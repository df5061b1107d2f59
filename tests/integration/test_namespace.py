"""sockpool installs one import package, and a user's own modules with
generic names (`client.py`, `protocol.py`, ...) change nothing.

These run the installed console scripts from a directory of the user's own,
with no PYTHONPATH pointing at this repository, as a new user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from .cluster import Proc, read_announcements, wait_for_processes

# The names a user's project is likely to hold, and that sockpool once
# installed as top-level packages of its own.
GENERIC_NAMES = ["client", "broker", "worker", "protocol", "tasks", "bench", "net"]


def clean_environment() -> dict[str, str]:
    """This machine's environment without PYTHONPATH or sockpool's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SOCKPOOL_") and k != "PYTHONPATH"}


def test_importing_sockpool_adds_only_sockpool_and_its_dependencies(tmp_path):
    probe = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import sockpool, sockpool.broker.server, sockpool.worker.node, sockpool.client.cli\n"
        "new = {name.partition('.')[0] for name in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(new)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=clean_environment(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    new = set(json.loads(done.stdout))
    # cython_runtime comes with msgpack's C extension; cronsim reads the
    # broker's cron schedules (tzdata, where the system has no zone data).
    dependencies = {"msgpack", "click", "prometheus_client", "cython_runtime", "cronsim", "tzdata"}
    foreign = {n for n in new if not n.startswith("_") and n not in sys.stdlib_module_names} - dependencies
    assert foreign == {"sockpool"}, foreign
    assert not new & set(GENERIC_NAMES)


def test_users_modules_with_generic_names_change_nothing(tmp_path):
    for script in ("broker", "worker", "submit"):
        if shutil.which(script) is None:
            pytest.skip(f"the {script} console script is not installed (pip install -e .)")
    project = tmp_path / "project"
    project.mkdir()
    # Each module serves a task, and would break sockpool if it shadowed a
    # part of it: it has none of the names sockpool imports.
    for name in GENERIC_NAMES:
        (project / f"{name}.py").write_text(f"def who(_):\n    return {name!r}\n")
    (project / "mytasks.py").write_text("def double(x):\n    return 2 * x\n")
    env = clean_environment()

    broker = Proc(["broker", "start", "--port", "0", "--in-memory"], tmp_path / "broker.log", cwd=project, base_env=env)
    try:
        address = read_announcements(broker, False)
        modules = [arg for name in ["mytasks", *GENERIC_NAMES] for arg in ("--tasks", name)]
        worker = Proc(["worker", "join", address, "--processes", "1", *modules], tmp_path / "worker.log",
                      cwd=project, base_env=env)
        try:
            wait_for_processes(address, 1)
            for name in GENERIC_NAMES:
                done = subprocess.run(["submit", "--broker", address, f"{name}:who", "x"], cwd=project, env=env,
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr + worker.log()
                assert done.stdout.split() == [name]
            done = subprocess.run(["submit", "--broker", address, "mytasks:double", "21"], cwd=project,
                                  env=env, capture_output=True, text=True, timeout=60)
            assert done.stdout.split() == ["42"], done.stderr
        finally:
            worker.stop()
    finally:
        broker.stop()
