"""Safe defaults outside the wire protocol: task modules, secret files, exposure warnings."""

from __future__ import annotations

import pytest

from sockpool.broker.exposure import exposure_warnings
from sockpool.net.credentials import read_secret_file
from sockpool.worker.registry import check_task_module, load_tasks


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


def private(path, text: str):
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_secret_file_is_stripped_and_must_be_long_enough(tmp_path):
    good = private(tmp_path / "good", "  0123456789abcdef0123456789abcdef  \n")
    assert read_secret_file(str(good)) == b"0123456789abcdef0123456789abcdef"
    short = private(tmp_path / "short", "0123456789abcdef\n")  # 16 bytes: guessable offline
    with pytest.raises(ValueError, match="at least 32"):
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


def test_results_are_split_to_fit_the_brokers_frames():
    import msgpack

    from sockpool.protocol import decode
    from sockpool.protocol.batch import fit_results, results_body
    from sockpool.protocol.framing import frame

    small = msgpack.packb([[1, True, "a" * 100], [2, True, "b" * 100]])
    big = msgpack.packb([[3, True, "c" * 3000], [4, True, "d" * 5000], [5, True, "e" * 100]])
    limit = 4096
    groups = fit_results([small, big], limit)
    entries = []
    for i, group in enumerate(groups):
        body = results_body(group, 7 if i == len(groups) - 1 else 0)
        assert len(body) <= limit
        entries += decode(body).results  # type: ignore[attr-defined]
    assert [e[0] for e in entries] == [1, 2, 3, 4, 5]
    too_big = entries[3]
    assert too_big[1] is False and too_big[2]["type"] == "ResultTooLarge"
    assert [e[1] for e in entries] == [True, True, True, False, True]
    assert len(frame(b"")) == 4  # frames add only the prefix


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_a_secret_file_other_users_can_read_or_write_is_refused(tmp_path, mode):
    path = private(tmp_path / "secret", "0123456789abcdef" * 4 + "\n")
    path.chmod(mode)
    with pytest.raises(ValueError, match="chmod 600"):
        read_secret_file(str(path))
    path.chmod(0o400)
    assert read_secret_file(str(path))
