"""Every command-line option can be given as a SOCKPOOL_... environment
variable, and `--help` says which (click.testing.CliRunner, no sockets)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from sockpool.broker.cli import main as broker_main
from sockpool.client.cli import main as submit_main
from sockpool.worker.cli import main as worker_main

CLIS = {"broker": broker_main, "worker": worker_main, "submit": submit_main}
# Options every command shares keep one name; the rest are named by click's
# auto_envvar_prefix: SOCKPOOL_, the subcommand, the flag.
SHARED = {"--broker": "SOCKPOOL_BROKER", "--secret-file": "SOCKPOOL_SECRET_FILE", "--tls-ca": "SOCKPOOL_TLS_CA"}


def commands() -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command that runs, nested groups (`broker schedule add`) included."""
    found: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(path: tuple[str, ...], cli: click.Command) -> None:
        if isinstance(cli, click.Group):
            for sub_name, sub in cli.commands.items():
                walk((*path, sub_name), sub)
        else:
            found.append((path, cli))

    for name, cli in CLIS.items():
        walk((name,), cli)
    return found


def expected_envvar(path: tuple[str, ...], option: click.Option) -> str:
    flag = max(option.opts, key=len)
    if flag in SHARED:
        return SHARED[flag]
    parts = ["SOCKPOOL", *[p.upper() for p in path[1:]], flag.lstrip("-").replace("-", "_").upper()]
    return "_".join(parts)


@pytest.mark.parametrize("path, command", commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_help_shows_each_options_environment_variable(path, command):
    done = CliRunner().invoke(CLIS[path[0]], [*path[1:], "--help"])
    assert done.exit_code == 0, done.output
    shown = {word.strip("[];,") for word in done.output.split() if word.startswith("SOCKPOOL_")}
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert options
    assert {expected_envvar(path, o) for o in options} <= shown


def test_names_that_read_as_the_flags_do():
    names = {(path, expected_envvar(path, o)) for path, c in commands() for o in c.params if isinstance(o, click.Option)}
    for expected in [
        (("broker", "start"), "SOCKPOOL_START_PORT"), (("broker", "start"), "SOCKPOOL_START_METRICS_PORT"),
        (("broker", "status"), "SOCKPOOL_STATUS_JSON"), (("worker", "join"), "SOCKPOOL_JOIN_TASKS"),
        (("submit",), "SOCKPOOL_JSON"), (("submit",), "SOCKPOOL_BROKER"),
    ]:
        assert expected in names


def test_an_environment_variable_sets_the_option():
    # SOCKPOOL_PROCESSES=0 is read and checked like `--processes 0`, before
    # anything starts. (Real processes configured by environment alone:
    # tests/integration/test_observe.py.)
    done = CliRunner().invoke(submit_main, ["square", "2"], env={"SOCKPOOL_LOCAL": "1", "SOCKPOOL_PROCESSES": "0"})
    assert done.exit_code == 2
    assert "Invalid value for '--processes'" in done.output
