"""`worker join HOST:PORT`: serve a broker with a pool of processes."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from client.envvars import CONTEXT_SETTINGS, show_envvars
from client.logs import configure_logging, log_level_option
from protocol import HandshakeRefused
from protocol.defaults import BROKER_ENV, CHUNK_TARGET_S

from .node import WorkerNode
from .runner import Runner, default_processes

log = logging.getLogger("sockpool.worker")


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """A sockpool worker node."""


@main.command()
@click.argument("address", required=False, envvar=BROKER_ENV)
@click.option("--processes", type=click.IntRange(1), default=None, help="Pool size [default: the cores].")
@click.option(
    "--tasks", "modules", multiple=True, metavar="MODULE",
    help="Also serve every public top-level function of MODULE, as MODULE:function. Repeatable.",
)
@click.option("--name", default=None, help="Name shown in the broker's logs [default: the host name].")
@log_level_option
def join(address: str | None, processes: int | None, modules: tuple[str, ...], name: str | None, log_level: str) -> None:
    """Join the broker at ADDRESS (HOST:PORT, else $SOCKPOOL_BROKER, else the default)."""
    configure_logging(log_level)
    # Like `python -m`, find task modules in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        runner = Runner(processes or default_processes(), list(modules), CHUNK_TARGET_S)
    except ImportError as exc:
        raise click.ClickException(f"cannot load tasks: {exc}") from exc
    node = WorkerNode(address, runner, name=name)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop())
    log.info("serving tasks: %s", ", ".join(runner.task_names))
    try:
        node.run()
    except HandshakeRefused as exc:
        raise click.ClickException(f"the broker refused this worker: {exc}") from exc
    finally:
        runner.close()


show_envvars(main)
