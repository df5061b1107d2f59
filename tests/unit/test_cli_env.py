"""Every command-line option can be given as a SOCKPOOL_... environment
variable, and `--help` says which (click.testing.CliRunner, no sockets)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from broker.cli import main as broker_main
from client.cli import main as submit_main
from worker.cli import main as worker_main


def commands(cli: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    if isinstance(cli, click.Group):
        return [c for name, sub in cli.commands.items() for c in commands(sub, (*path, name))]
    return [(path, cli)]


EXPECTED = {
    ("broker", "start"): {"SOCKPOOL_START_HOST", "SOCKPOOL_START_PORT", "SOCKPOOL_START_MAX_FRAME_BYTES",
                          "SOCKPOOL_START_NAME", "SOCKPOOL_START_METRICS_PORT", "SOCKPOOL_START_LOG_LEVEL"},
    ("broker", "status"): {"SOCKPOOL_BROKER", "SOCKPOOL_STATUS_JSON", "SOCKPOOL_STATUS_TIMEOUT"},
    ("worker", "join"): {"SOCKPOOL_JOIN_PROCESSES", "SOCKPOOL_JOIN_TASKS", "SOCKPOOL_JOIN_NAME",
                         "SOCKPOOL_JOIN_LOG_LEVEL"},
    ("submit",): {"SOCKPOOL_BROKER", "SOCKPOOL_JSON", "SOCKPOOL_LOCAL", "SOCKPOOL_PROCESSES", "SOCKPOOL_TASKS",
                  "SOCKPOOL_CHUNKSIZE"},
}
CLIS = {"broker": broker_main, "worker": worker_main, "submit": submit_main}


def all_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    return [((name, *path), cmd) for name, cli in CLIS.items() for path, cmd in commands(cli)]


def test_every_command_is_covered():
    assert {path for path, _ in all_commands()} == set(EXPECTED)


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_help_shows_each_options_environment_variable(path):
    cli = CLIS[path[0]]
    done = CliRunner().invoke(cli, [*path[1:], "--help"])
    assert done.exit_code == 0, done.output
    shown = {word.strip("[];,") for word in done.output.split() if word.startswith("SOCKPOOL_")}
    assert EXPECTED[path] <= shown
    options = [p for p in dict(all_commands())[path].params if isinstance(p, click.Option)]
    assert len(options) == len(EXPECTED[path])  # a new option must be added above


def test_an_environment_variable_sets_the_option():
    # SOCKPOOL_PROCESSES=0 is read and checked like `--processes 0`, before
    # anything starts. (Real processes configured by environment alone:
    # tests/integration/test_observe.py.)
    done = CliRunner().invoke(submit_main, ["square", "2"], env={"SOCKPOOL_LOCAL": "1", "SOCKPOOL_PROCESSES": "0"})
    assert done.exit_code == 2
    assert "Invalid value for '--processes'" in done.output
