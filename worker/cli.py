"""`worker join HOST:PORT`: serve a broker with a pool of processes.

SIGTERM or SIGINT drains: no more jobs, those running finish, those not
started go back to the broker, then exit 0, within `--drain-timeout`; what
is still running then goes back to the broker too, uncharged. The signal
may come to this process alone or to its whole group (Ctrl-C, systemd's
stop): the pool processes ignore it (see pool_signals.py) and are stopped
by us. A second signal to this process exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from sockpool.net.credentials import Credentials, peer_options
from sockpool.envvars import CONTEXT_SETTINGS, show_envvars
from sockpool.logs import configure_logging, log_level_option
from sockpool.protocol import HandshakeRefused
from sockpool.protocol.defaults import BROKER_ENV, CHUNK_TARGET_S, DRAIN_TIMEOUT_S
from sockpool.protocol.messages import DEFAULT_QUEUE, MAX_QUEUE_NAME_CHARS, MAX_WORKER_QUEUES, valid_queue_name

from .heap import keep_freed_buffers
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
@click.option(
    "--queues", default=DEFAULT_QUEUE, show_default=True, metavar="Q1,Q2,...",
    help="Take jobs only from these queues, in strict order of preference: from Q2 only when Q1 has none for us.",
)
@peer_options("File holding the secret the broker requires of workers.")
@click.option(
    "--drain-timeout", type=click.FloatRange(0), default=DRAIN_TIMEOUT_S, show_default=True, metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running jobs may take to finish before the worker leaves anyway.",
)
@log_level_option
def join(
    address: str | None, processes: int | None, modules: tuple[str, ...], name: str | None, queues: str,
    secret_file: str | None, tls_ca: str | None, drain_timeout: float, log_level: str,
) -> None:
    """Join the broker at ADDRESS (HOST:PORT, else $SOCKPOOL_BROKER, else the default)."""
    configure_logging(log_level)
    queue_names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in queue_names if not valid_queue_name(q)]
    if bad or not queue_names or len(queue_names) > MAX_WORKER_QUEUES:
        raise click.UsageError(
            f"--queues takes 1 to {MAX_WORKER_QUEUES} comma-separated names of 1 to {MAX_QUEUE_NAME_CHARS} "
            f"letters, digits and _.:- (got {queues!r})"
        )
    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    # Like `python -m`, find task modules in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    keep_freed_buffers()  # large arguments reuse pages instead of faulting in new ones (heap.py)
    try:
        runner = Runner(processes or default_processes(), list(modules), CHUNK_TARGET_S)
    except (ImportError, ValueError) as exc:
        raise click.ClickException(f"cannot load tasks: {exc}") from exc
    node = WorkerNode(
        address, runner, name=name, drain_timeout_s=drain_timeout, credentials=credentials, queues=queue_names
    )
    signals = 0

    def on_signal(signum: int, _frame: object) -> None:
        # Runs on the main thread between two bytecodes of whatever it was
        # doing, maybe holding a lock: so no locks and no logging here.
        nonlocal signals
        signals += 1
        if signals == 1:
            node.request_drain()
        else:
            runner.kill_processes()
            os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    log.info("serving tasks: %s; queues: %s", ", ".join(runner.task_names), ", ".join(queue_names))
    try:
        node.run()
    except HandshakeRefused as exc:
        raise click.ClickException(f"cannot join the broker: {exc}") from exc
    finally:
        if not runner.close():
            # A pool process we cannot reap must not keep us from exiting.
            logging.shutdown()
            os._exit(1)


show_envvars(main)
