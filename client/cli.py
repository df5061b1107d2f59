"""`submit TASK ARG...`: one job per ARG, results printed in input order."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any, Iterable, Iterator, Sequence, TextIO

import click

from sockpool.protocol import SockpoolError
from sockpool.protocol.defaults import BROKER_ENV, PROGRESS_MIN_JOBS
from sockpool.protocol.messages import MAX_PRIORITY, MAX_RETRIES, MIN_PRIORITY, REFUSALS, RESULT_DETACHED, RESULT_NONE

from .api import Client, JobOptions, job_options
from .errors import E_BROKER_FULL, JobFailed
from sockpool.net.credentials import Credentials, peer_options
from sockpool.cliargs import parse_arg
from sockpool.envvars import CONTEXT_SETTINGS, show_envvars
from .progress import REDRAW_S, ProgressBar

# Distinct errors printed in full; the rest are counted.
_ERRORS_SHOWN = 5
# How long --detach waits for the broker to confirm that every job is on disk.
ACCEPT_TIMEOUT_S = 120.0


_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `2h`, `1d`, `250ms` or plain seconds, as seconds.

    Raises:
        ValueError: anything else.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise ValueError(f"--delay takes a duration like 30s, 5m, 2h, 1d or plain seconds, not {text!r}")
    return float(match.group(1)) * _DURATION_UNITS_S[match.group(2) or "s"]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with its zone (`Z` or `+01:00`).

    Raises:
        ValueError: not ISO 8601, or no zone (a naive time is ambiguous).
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at takes an ISO 8601 time like 2026-12-24T18:00:00Z, not {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"--at needs a time zone (Z or +HH:MM): {text!r} could be any zone's")
    return when


def format_value(value: Any) -> str:
    if type(value) is int:  # the common case, and what json.dumps would give
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


class OrderedWriter:
    """Writes result lines to stdout in batches, keeping the bar below them.

    Lines are buffered and written every `REDRAW_S` (and at the end): one
    write per batch instead of one per result, and the bar is cleared before
    and redrawn after, so results and bar never share a line.
    """

    def __init__(self, out: TextIO, bar: ProgressBar | None) -> None:
        self.out = out
        self.bar = bar
        self._lines: list[str] = []
        self._flushed_at = time.monotonic()

    def write(self, text: str, done: int) -> None:
        self._lines.append(text)
        self.progress(done)

    def progress(self, done: int) -> None:
        if self.bar is not None:
            self.bar.done = done
        if time.monotonic() - self._flushed_at >= REDRAW_S:
            self.flush()

    def flush(self) -> None:
        if self.bar is not None:
            self.bar.clear()
        self.out.write("".join(self._lines))
        self.out.flush()
        self._lines = []
        self._flushed_at = time.monotonic()
        if self.bar is not None:
            self.bar.draw()

    def close(self) -> None:
        self.flush()
        if self.bar is not None:
            self.bar.clear()


# Options go before TASK: everything after it is an ARG, so `square -3`
# works, and click's option scan (quadratic in the count of arguments)
# stops at TASK instead of walking 100,000 ARGs.
@click.command(context_settings={**CONTEXT_SETTINGS, "allow_interspersed_args": False})
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON array.")
@click.option("--local", is_flag=True, help="Run on an embedded broker and worker started for this command.")
@click.option("--processes", type=click.IntRange(1), default=None, help="With --local: pool size [default: the cores].")
@click.option("--tasks", "modules", multiple=True, metavar="MODULE", help="With --local: also load MODULE's tasks.")
@click.option("--chunksize", type=click.IntRange(1), default=None, help="Jobs per batch [default: sized to the cluster].")
@click.option("--retries", type=click.IntRange(0, MAX_RETRIES), default=0, help="Retry a failed job up to N times, with backoff.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Kill a job's process when it runs longer than this.")
@click.option("--queue", default=None, metavar="NAME", help="Put the jobs in this queue [default: default].")
@click.option("--priority", type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY), default=0,
              help="Higher runs first [default: 0].")
@click.option("--delay", "delay_text", default=None, metavar="DURATION",
              help="Run no sooner than this from now: 30s, 5m, 2h, 1d or plain seconds.")
@click.option("--at", "at_text", default=None, metavar="ISO-TIME",
              help="Run no sooner than this time, with its zone: 2026-12-24T18:00:00Z.")
@click.option("--detach", is_flag=True, help="Print a submission ID once the broker has every job on disk, and exit.")
@click.option("--no-wait", "no_wait", is_flag=True,
              help="Fire and forget: exit once the broker has every job on disk; it keeps no results, "
                   "only failures (broker failed).")
@click.option("--attach", "attach_id", metavar="ID", default=None, help="Wait for the results of a detached submission.")
@click.option("--cancel", "cancel_id", metavar="ID", default=None,
              help="Cancel a detached submission's unfinished jobs (running ones are stopped), and exit.")
@click.option("--key", metavar="KEY", default=None,
              help="Unique key: while a job with KEY is unfinished or uncollected, join it instead of making one (one ARG).")
@click.option("--limit-key", metavar="NAME", default=None,
              help="Run at most --limit jobs of NAME at once across the cluster (or the broker's --limit NAME=N).")
@click.option("--limit", "limit", type=click.IntRange(1), default=None, metavar="N",
              help="With --limit-key: the limit's capacity.")
@peer_options()
@click.option(
    "--progress/--no-progress", default=None,
    help=f"Show a progress bar on stderr [default: for {PROGRESS_MIN_JOBS:,} jobs or more when stdout is a terminal].",
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
    queue: str | None,
    priority: int,
    delay_text: str | None,
    at_text: str | None,
    detach: bool,
    no_wait: bool,
    attach_id: str | None,
    cancel_id: str | None,
    key: str | None,
    limit_key: str | None,
    limit: int | None,
    secret_file: str | None,
    tls_ca: str | None,
    progress: bool | None,
    task: str | None,
    args: tuple[str, ...],
) -> None:
    """Run TASK once for each ARG and print the results in order.

    Each ARG is read as a JSON literal where it parses as one, else as a
    string. Options go before TASK. Results are printed as they arrive, in
    input order. Exits 0 only if every job succeeded.
    """
    option_names = _option_names()  # once: a set comprehension would rebuild it for every ARG
    misplaced = sorted({a for a in args if a in option_names})
    if misplaced:
        raise click.UsageError(
            f"options go before TASK: {', '.join(misplaced)} (to send one as a string ARG, quote it as JSON: '\"--json\"')"
        )
    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if cancel_id is not None:
        if task is not None or attach_id is not None:
            raise click.UsageError("--cancel takes no TASK, ARG or --attach")
        click.echo(cancel_submission(address, cancel_id, credentials))
        return
    if key is not None and len(args) != 1:
        raise click.UsageError("--key names one job: give exactly one ARG")
    if limit is not None and limit_key is None:
        raise click.UsageError("--limit goes with --limit-key")
    try:
        options = job_options(
            retries, timeout, key=key, limit_key=limit_key, limit=limit, queue=queue, priority=priority,
            delay=parse_duration(delay_text) if delay_text is not None else None,
            at=parse_time(at_text) if at_text is not None else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if attach_id is not None:
        if task is not None:
            raise click.UsageError("--attach takes no TASK or ARG")
        labels, results = attach(address, attach_id, credentials)
    elif task is None:
        raise click.UsageError("missing TASK")
    elif detach or no_wait:
        if local:
            raise click.UsageError("--detach and --no-wait need a broker that outlives this command, not --local")
        if detach and no_wait:
            raise click.UsageError("--detach keeps the results for --attach, --no-wait keeps none: pick one")
        values = [parse_arg(a) for a in args]
        submission = submit_detached(address, task, values, options, credentials, keep_results=detach)
        if detach:
            click.echo(submission)
        else:
            click.echo(f"submit: {len(values)} jobs on the broker's disk; no results are kept, "
                       "failures are listed by `broker failed`", err=True)
        return
    else:
        labels = args
        values = [parse_arg(a) for a in args]
        results = run(address, local, processes, modules, task, values, chunksize, options, credentials)
    if progress is None:
        progress = len(labels) >= PROGRESS_MIN_JOBS and sys.stdout.isatty()
    bar = ProgressBar(len(labels), sys.stderr) if progress else None
    failures = print_results(results, as_json, OrderedWriter(sys.stdout, bar))
    if failures:
        report_failures(failures, labels)
        sys.exit(1)


class NoticePrinter:
    """Prints each distinct notice from the broker once on stderr (a job
    waiting for a worker that serves its task, say): never wait without a word."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, text: str) -> None:
        if text not in self._seen:
            self._seen.add(text)
            click.echo(f"submit: waiting: {text}", err=True)


def _option_names() -> set[str]:
    return {name for param in main.params if isinstance(param, click.Option) for name in param.opts + param.secondary_opts}


def run(
    address: str | None, local: bool, processes: int | None, modules: tuple[str, ...], task: str,
    values: list[Any], chunksize: int | None, options: dict[str, Any], credentials: Credentials,
) -> Iterator[Any]:
    """The results, in order, as they arrive; acknowledged once all are in."""
    try:
        with ExitStack() as stack:
            if local:
                from .local import LocalCluster

                # The embedded broker listens on loopback only: no TLS, but
                # the same secret, so a configured secret keeps working.
                cluster = stack.enter_context(LocalCluster(processes, modules, secret=credentials.secret))
                address, credentials = cluster.address, Credentials(secret=credentials.secret)
            client = stack.enter_context(
                Client(address, auto_ack=False, credentials=credentials, on_notice=NoticePrinter())
            )
            jobs = JobOptions(client, options)
            if options.get("key") is not None:
                # One keyed job: it may join another client's job of that key.
                try:
                    yield jobs.submit(task, values[0]).result()
                except JobFailed as failed:
                    yield failed
            else:
                yield from jobs.map(task, values, chunksize=chunksize, return_exceptions=True)
            client.ack_all()
    except (SockpoolError, ValueError) as exc:  # ValueError: a refused --tasks module
        raise click.ClickException(str(exc)) from exc


def submit_detached(
    address: str | None, task: str, values: list[Any], options: dict[str, Any], credentials: Credentials,
    keep_results: bool = True,
) -> str:
    """Submit one job per value, detached (or, without `keep_results`, fire
    and forget); return the session ID once all are durable."""
    try:
        with Client(address, auto_ack=False, credentials=credentials, on_notice=NoticePrinter()) as client:
            jobs = JobOptions(client, {**options, "result": RESULT_DETACHED if keep_results else RESULT_NONE})
            futures = [jobs.submit(task, value) for value in values]
            if not client.wait_accepted(ACCEPT_TIMEOUT_S):
                raise click.ClickException("the broker did not accept every job in time")
            # A refusal (disk full, broker full) comes before the `accepted` of its batch.
            refused = [
                error for error in (f.exception(0) for f in futures if f.done())
                if isinstance(error, JobFailed) and error.remote_type in (*REFUSALS, E_BROKER_FULL)
            ]
            if refused:
                raise click.ClickException(
                    f"{refused[0].remote_message}: {len(refused)} of {len(futures)} jobs not accepted"
                )
            return client.session
    except SockpoolError as exc:
        raise click.ClickException(str(exc)) from exc


def cancel_submission(address: str | None, session: str, credentials: Credentials) -> str:
    """Cancel a detached submission's unfinished jobs; a line saying what happened.

    Its session keeps the cancelled jobs' results (Cancelled), so a later
    `--attach` shows each job's outcome.
    """
    try:
        with Client(address, credentials=credentials) as client:
            counts = client.cancel_session(session)
    except SockpoolError as exc:
        raise click.ClickException(str(exc)) from exc
    if not counts["cancelled"] and not counts["stopped"]:
        return f"submission {session}: nothing left to cancel"
    return f"submission {session}: cancelled {counts['cancelled']} waiting and stopped {counts['stopped']} running job(s)"


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


def print_results(results: Iterable[Any], as_json: bool, writer: OrderedWriter) -> list[tuple[int, JobFailed]]:
    """Write each result as it arrives; returns the failures, with their indexes.

    Lines that arrived are written out even if the rest cannot come (the
    exception then propagates). `--json` output is written whole at the
    end, so it is valid JSON or nothing.
    """
    failures: list[tuple[int, JobFailed]] = []
    values: list[Any] = []
    try:
        for index, r in enumerate(results):
            if isinstance(r, JobFailed):
                failures.append((index, r))
            if as_json:
                values.append(None if isinstance(r, JobFailed) else r)
                writer.progress(index + 1)
            elif isinstance(r, JobFailed):
                writer.write(f"error: {r.remote_type}: {r.remote_message}\n", index + 1)
            else:
                writer.write(f"{format_value(r)}\n", index + 1)
        if as_json:
            writer.write(json.dumps(values) + "\n", len(values))
    finally:
        writer.close()
    return failures


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
