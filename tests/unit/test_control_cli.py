"""Control over jobs at the edges that need no broker: option checks in the
client, and the CLIs refusing what they cannot do."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sockpool.broker.cli import main as broker_main
from sockpool.client.api import job_options
from sockpool.client.cli import main as submit_main


def test_job_options_carry_keys_and_limits_only_when_given():
    assert job_options(0, None) == {}
    assert job_options(0, None, key="k", limit_key="c", limit=2) == {"key": "k", "limit_key": "c", "limit": 2}
    for bad in ({"key": ""}, {"key": "x" * 257}, {"limit_key": 3}, {"limit": 0}, {"limit": 2.5}):
        with pytest.raises(ValueError):
            job_options(0, None, **bad)


@pytest.mark.parametrize("args, message", [
    (["--key", "k", "square", "1", "2"], "exactly one ARG"),
    (["--limit", "2", "square", "1"], "--limit goes with --limit-key"),
    (["--cancel", "abc", "square", "1"], "--cancel takes no TASK"),
])
def test_submit_refuses_control_options_it_cannot_honour(args, message):
    done = CliRunner().invoke(submit_main, ["--broker", "127.0.0.1:1", *args])
    assert done.exit_code == 2 and message in done.output


@pytest.mark.parametrize("args, message", [
    (["retry"], "give IDs or --all"),
    (["retry", "1", "--all"], "give IDs or --all"),
    (["retry", "1", "--task", "t"], "--task goes with --all"),
    (["cancel"], "give IDs, --session or --task"),
    (["cancel", "1", "--task", "t"], "give IDs, --session or --task"),
    (["start", "--in-memory", "--limit", "fetch"], "NAME=N"),
])
def test_broker_commands_refuse_bad_control_arguments(args, message):
    done = CliRunner().invoke(broker_main, args)
    assert done.exit_code == 2 and message in done.output
