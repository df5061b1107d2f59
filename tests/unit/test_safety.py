"""Safe defaults outside the wire protocol: task modules, secret files, exposure warnings."""

from __future__ import annotations

import pytest

from broker.server import exposure_warnings
from client.credentials import read_secret_file
from worker.registry import check_task_module, load_tasks


@pytest.mark.parametrize("module", ["os", "subprocess", "builtins", "os.path", "shutil", "importlib.util", "sys"])
def test_standard_library_modules_are_refused_as_task_modules(module):
    with pytest.raises(ValueError, match="standard-library"):
        check_task_module(module)
    with pytest.raises(ValueError, match="standard-library"):
        load_tasks(["tests.tasks", module])


def test_a_task_module_serves_only_what_it_defines():
    tasks = load_tasks(["tests.tasks"])
    assert "tests.tasks:add" in tasks and "square" in tasks
    # tests.tasks imports os and time; neither leaks in as a task.
    assert not [name for name in tasks if name.startswith(("tests.tasks:os", "tests.tasks:time", "os:"))]
    assert "tests.tasks:_private" not in tasks


def test_secret_file_is_stripped_and_must_be_long_enough(tmp_path):
    good = tmp_path / "good"
    good.write_text("  0123456789abcdef0123  \n")
    assert read_secret_file(str(good)) == b"0123456789abcdef0123"
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_secret_file(str(short))
    with pytest.raises(ValueError, match="cannot read"):
        read_secret_file(str(tmp_path / "missing"))


def test_loopback_brokers_get_no_warning():
    assert exposure_warnings("127.0.0.1", 7341, ["client", "worker"], False) == []
    assert exposure_warnings("::1", 7341, ["client", "worker"], False) == []


def test_a_broker_reachable_from_other_machines_is_warned_about():
    open_both = exposure_warnings("0.0.0.0", 7341, ["client", "worker"], False)
    assert any("no secret" in w and "receive other people's jobs" in w and "--secret-file" in w for w in open_both)
    assert any("without TLS" in w for w in open_both)
    # A worker secret alone still leaves submitting open.
    clients_open = exposure_warnings("192.168.1.5", 7341, ["client"], True)
    assert len(clients_open) == 1 and "submit jobs" in clients_open[0] and "receive" not in clients_open[0]
    assert exposure_warnings("10.0.0.1", 7341, [], True) == []
    assert len(exposure_warnings("broker.example", 7341, [], False)) == 1
