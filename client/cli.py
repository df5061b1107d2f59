"""`submit TASK ARG...`: one job per ARG, results printed in input order."""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import ExitStack
from typing import Any

import click

from protocol import SockpoolError
from protocol.defaults import BROKER_ENV, SECRET_ENV, TLS_CA_ENV

from .api import Client, JobFailed
from .credentials import Credentials

# Distinct errors printed in full; the rest are counted.
_ERRORS_SHOWN = 5


def parse_arg(text: str) -> Any:
    """A JSON literal where the text parses as one (`3`, `2.5`, `[1, 2]`), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@click.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help=f"Broker address [env: {BROKER_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON array.")
@click.option("--local", is_flag=True, help="Run on an embedded broker and worker started for this command.")
@click.option("--processes", type=click.IntRange(1), default=None, help="With --local: pool size [default: the cores].")
@click.option("--tasks", "modules", multiple=True, metavar="MODULE", help="With --local: also load MODULE's tasks.")
@click.option("--chunksize", type=click.IntRange(1), default=None, help="Jobs per batch [default: sized to the cluster].")
@click.option(
    "--secret-file", envvar=SECRET_ENV, metavar="PATH",
    help=f"File holding the secret the broker requires [env: {SECRET_ENV}].",
)
@click.option(
    "--tls-ca", envvar=TLS_CA_ENV, metavar="PATH",
    help=f"Connect with TLS, trusting the broker's certificate if this CA signed it [env: {TLS_CA_ENV}].",
)
@click.argument("task")
@click.argument("args", nargs=-1)
def main(
    address: str | None,
    as_json: bool,
    local: bool,
    processes: int | None,
    modules: tuple[str, ...],
    chunksize: int | None,
    secret_file: str | None,
    tls_ca: str | None,
    task: str,
    args: tuple[str, ...],
) -> None:
    """Run TASK once for each ARG and print the results in order.

    Each ARG is read as a JSON literal where it parses as one, else as a
    string. Exits 0 only if every job succeeded.
    """
    values = [parse_arg(a) for a in args]
    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
        with ExitStack() as stack:
            if local:
                from .local import LocalCluster

                # The embedded broker listens on loopback only: no TLS, but
                # the same secret, so a configured secret keeps working.
                cluster = stack.enter_context(LocalCluster(processes, modules, secret=credentials.secret))
                address, credentials = cluster.address, Credentials(secret=credentials.secret)
            client = stack.enter_context(Client(address, credentials=credentials))
            results = list(client.map(task, values, chunksize=chunksize, return_exceptions=True))
    except (SockpoolError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, JobFailed)]
    if as_json:
        click.echo(json.dumps([None if isinstance(r, JobFailed) else r for r in results]))
    else:
        for r in results:
            click.echo(f"error: {r.remote_type}: {r.remote_message}" if isinstance(r, JobFailed) else format_value(r))
    if failures:
        report_failures(failures, args)
        sys.exit(1)


def report_failures(failures: list[tuple[int, JobFailed]], args: tuple[str, ...]) -> None:
    """Each distinct error once on stderr, with how many jobs it hit."""
    counts = Counter((f.remote_type, f.remote_message) for _, f in failures)
    shown: set[tuple[str, str]] = set()
    for index, failure in failures:
        key = (failure.remote_type, failure.remote_message)
        if key in shown or len(shown) >= _ERRORS_SHOWN:
            continue
        shown.add(key)
        others = f" (and {counts[key] - 1} more jobs)" if counts[key] > 1 else ""
        click.echo(f"job {index} (ARG {args[index]!r}) failed{others}: {failure}", err=True)
    click.echo(f"{len(failures)} of {len(args)} jobs failed", err=True)
