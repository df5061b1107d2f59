"""The sans-IO protocol and the broker's pure core type-check under mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What must pass --strict, as paths inside the installed `sockpool` package.
STRICT = [
    "sockpool/protocol", "sockpool/broker/state.py", "sockpool/broker/records.py", "sockpool/broker/unserved.py",
    "sockpool/broker/control.py", "sockpool/broker/keys.py", "sockpool/broker/limits.py",
    "sockpool/broker/store", "sockpool/broker/dispatch.py", "sockpool/broker/schedules.py",
    "sockpool/broker/operations.py", "sockpool/broker/firing.py",
    "sockpool/broker/status_view.py", "sockpool/broker/restore.py", "sockpool/broker/outcomes.py",
    "sockpool/broker/expiry.py", "sockpool/broker/handout.py", "sockpool/broker/succession.py",
    "sockpool/broker/connections.py", "sockpool/broker/worker_messages.py",
    "sockpool/broker/periodic.py", "sockpool/broker/submission.py",
]


def test_mypy_strict_on_the_pure_core(tmp_path):
    if shutil.which("mypy") is None and subprocess.run(
        [sys.executable, "-m", "mypy", "--version"], capture_output=True, timeout=60
    ).returncode != 0:
        pytest.skip("mypy is not installed (it is in the test extra)")
    # mypy cannot follow setuptools' package-dir mapping, so lay the folders
    # out as the package they install as: sockpool/protocol -> protocol/, ...
    package = tmp_path / "sockpool"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for folder in ("protocol", "broker"):
        (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "cache"), *STRICT],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
