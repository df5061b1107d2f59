"""Environment variables for every command-line option of the three commands.

click's `auto_envvar_prefix` derives a name for each option: `SOCKPOOL_`,
then the subcommand, then the option, e.g. `SOCKPOOL_START_PORT` for
`broker start --port` and `SOCKPOOL_JSON` for `submit --json`. Options
that name a broker keep their shared `SOCKPOOL_BROKER`. `--help` lists
the variable beside each option.
"""

from __future__ import annotations

from typing import Any

import click

ENV_PREFIX = "SOCKPOOL"
CONTEXT_SETTINGS: dict[str, Any] = {"auto_envvar_prefix": ENV_PREFIX}


def show_envvars(command: click.Command, prefix: str = ENV_PREFIX) -> click.Command:
    """Make `--help` show each option's environment variable, in `command`
    and all its subcommands; returns `command`.

    click names the variable after the Python parameter; where that differs
    from the flag (`--json` stored as `as_json`), name it after the flag,
    as a user reading `--help` would guess.
    """
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        param.show_envvar = True
        flag = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
        if param.envvar is None and param.name is not None and flag != param.name.upper():
            param.envvar = f"{prefix}_{flag}"
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            show_envvars(sub, f"{prefix}_{name.replace('-', '_').upper()}")
    return command
