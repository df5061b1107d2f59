"""`submit TASK ARG...`: one job per ARG, results printed in input order."""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import ExitStack
from typing import Any, Sequence

import click

from protocol import SockpoolError
from protocol.defaults import BROKER_ENV, SECRET_ENV, TLS_CA_ENV
from protocol.messages import MAX_RETRIES

from .api import Client, JobFailed
from .credentials import Credentials
from .envvars import CONTEXT_SETTINGS, show_envvars

# Distinct errors printed in full; the rest are counted.
_ERRORS_SHOWN = 5
# How long --detach waits for the broker to confirm that every job is on disk.
ACCEPT_TIMEOUT_S = 120.0


def parse_arg(text: str) -> Any:
    """A JSON literal where the text parses as one (`3`, `2.5`, `[1, 2]`), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON array.")
@click.option("--local", is_flag=True, help="Run on an embedded broker and worker started for this command.")
@click.option("--processes", type=click.IntRange(1), default=None, help="With --local: pool size [default: the cores].")
@click.option("--tasks", "modules", multiple=True, metavar="MODULE", help="With --local: also load MODULE's tasks.")
@click.option("--chunksize", type=click.IntRange(1), default=None, help="Jobs per batch [default: sized to the cluster].")
@click.option("--retries", type=click.IntRange(0, MAX_RETRIES), default=0, help="Retry a failed job up to N times, with backoff.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Kill a job's process when it runs longer than this.")
@click.option("--detach", is_flag=True, help="Print a submission ID once the broker has every job on disk, and exit.")
@click.option("--attach", "attach_id", metavar="ID", default=None, help="Wait for the results of a detached submission.")
@click.option(
    "--secret-file", envvar=SECRET_ENV, metavar="PATH",
    help="File holding the secret the broker requires.",
)
@click.option(
    "--tls-ca", envvar=TLS_CA_ENV, metavar="PATH",
    help="Connect with TLS, trusting the broker's certificate if this CA signed it.",
)
@click.argument("task", required=False)
@click.argument("args", nargs=-1)
def main(
    address: str | None,
    as_json: bool,
    local: bool,
    processes: int | None,
    modules: tuple[str, ...],
    chunksize: int | None,
    retries: int,
    timeout: float | None,
    detach: bool,
    attach_id: str | None,
    secret_file: str | None,
    tls_ca: str | None,
    task: str | None,
    args: tuple[str, ...],
) -> None:
    """Run TASK once for each ARG and print the results in order.

    Each ARG is read as a JSON literal where it parses as one, else as a
    string. Exits 0 only if every job succeeded.
    """
    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if attach_id is not None:
        if task is not None:
            raise click.UsageError("--attach takes no TASK or ARG")
        labels, results = attach(address, attach_id, credentials)
    elif task is None:
        raise click.UsageError("missing TASK")
    elif detach:
        if local:
            raise click.UsageError("--detach needs a broker that outlives this command, not --local")
        click.echo(submit_detached(address, task, [parse_arg(a) for a in args], retries, timeout, credentials))
        return
    else:
        labels = args
        values = [parse_arg(a) for a in args]
        results = run(address, local, processes, modules, task, values, chunksize, retries, timeout, credentials)
    print_results(results, labels, as_json)


def run(
    address: str | None, local: bool, processes: int | None, modules: tuple[str, ...], task: str,
    values: list[Any], chunksize: int | None, retries: int, timeout: float | None, credentials: Credentials,
) -> list[Any]:
    try:
        with ExitStack() as stack:
            if local:
                from .local import LocalCluster

                # The embedded broker listens on loopback only: no TLS, but
                # the same secret, so a configured secret keeps working.
                cluster = stack.enter_context(LocalCluster(processes, modules, secret=credentials.secret))
                address, credentials = cluster.address, Credentials(secret=credentials.secret)
            client = stack.enter_context(Client(address, auto_ack=False, credentials=credentials))
            jobs = client.with_options(retries=retries, timeout=timeout)
            results = list(jobs.map(task, values, chunksize=chunksize, return_exceptions=True))
            client.ack_all()
            return results
    except (SockpoolError, ValueError) as exc:  # ValueError: a refused --tasks module
        raise click.ClickException(str(exc)) from exc


def submit_detached(
    address: str | None, task: str, values: list[Any], retries: int, timeout: float | None, credentials: Credentials
) -> str:
    """Submit one job per value; return the session ID once all are durable."""
    try:
        with Client(address, auto_ack=False, credentials=credentials) as client:
            jobs = client.with_options(retries=retries, timeout=timeout)
            for value in values:
                jobs.submit(task, value)
            if not client.wait_accepted(ACCEPT_TIMEOUT_S):
                raise click.ClickException("the broker did not accept every job in time")
            return client.session
    except SockpoolError as exc:
        raise click.ClickException(str(exc)) from exc


def attach(address: str | None, session: str, credentials: Credentials) -> tuple[list[str], list[Any]]:
    """Collect a detached submission's results, in order, then let the broker forget them."""
    try:
        with Client(address, session=session, auto_ack=False, credentials=credentials) as client:
            collected = client.collect()
            if not collected:
                raise click.ClickException(f"the broker holds no jobs for submission {session!r}")
            results = [value if ok else JobFailed(value) for _, ok, value in collected]
            client.ack_all()
    except SockpoolError as exc:
        raise click.ClickException(str(exc)) from exc
    return [f"#{job_id}" for job_id, _, _ in collected], results


def print_results(results: list[Any], labels: Sequence[str], as_json: bool) -> None:
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, JobFailed)]
    if as_json:
        click.echo(json.dumps([None if isinstance(r, JobFailed) else r for r in results]))
    else:
        for r in results:
            click.echo(f"error: {r.remote_type}: {r.remote_message}" if isinstance(r, JobFailed) else format_value(r))
    if failures:
        report_failures(failures, labels)
        sys.exit(1)


show_envvars(main)


def report_failures(failures: list[tuple[int, JobFailed]], args: Sequence[str]) -> None:
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
