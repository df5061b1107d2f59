"""`submit TASK ARG...`: one job per ARG, results printed in input order."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from contextlib import ExitStack
from typing import Any, Iterable, TextIO

import click

from protocol import SockpoolError
from protocol.defaults import BROKER_ENV, PROGRESS_MIN_JOBS

from .api import Client, JobFailed
from .progress import REDRAW_S, ProgressBar

# Distinct errors printed in full; the rest are counted.
_ERRORS_SHOWN = 5


def parse_arg(text: str) -> Any:
    """A JSON literal where the text parses as one (`3`, `2.5`, `[1, 2]`), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


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


@click.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help=f"Broker address [env: {BROKER_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON array.")
@click.option("--local", is_flag=True, help="Run on an embedded broker and worker started for this command.")
@click.option("--processes", type=click.IntRange(1), default=None, help="With --local: pool size [default: the cores].")
@click.option("--tasks", "modules", multiple=True, metavar="MODULE", help="With --local: also load MODULE's tasks.")
@click.option("--chunksize", type=click.IntRange(1), default=None, help="Jobs per batch [default: sized to the cluster].")
@click.option(
    "--progress/--no-progress", default=None,
    help=f"Show a progress bar on stderr [default: for {PROGRESS_MIN_JOBS:,} jobs or more when stdout is a terminal].",
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
    progress: bool | None,
    task: str,
    args: tuple[str, ...],
) -> None:
    """Run TASK once for each ARG and print the results in order.

    Each ARG is read as a JSON literal where it parses as one, else as a
    string. Results are printed as they arrive, in input order. Exits 0
    only if every job succeeded.
    """
    values = [parse_arg(a) for a in args]
    if progress is None:
        progress = len(values) >= PROGRESS_MIN_JOBS and sys.stdout.isatty()
    bar = ProgressBar(len(values), sys.stderr) if progress else None
    try:
        with ExitStack() as stack:
            if local:
                from .local import LocalCluster

                address = stack.enter_context(LocalCluster(processes, modules)).address
            client = stack.enter_context(Client(address))
            if bar is not None:
                bar.draw()
            results = client.map(task, values, chunksize=chunksize, return_exceptions=True)
            failures = print_results(results, as_json, OrderedWriter(sys.stdout, bar))
    except SockpoolError as exc:
        if bar is not None:
            bar.clear()
        raise click.ClickException(str(exc)) from exc
    if failures:
        report_failures(failures, args)
        sys.exit(1)


def print_results(results: Iterable[Any], as_json: bool, writer: OrderedWriter) -> list[tuple[int, JobFailed]]:
    """Write each result as it arrives; the failures, with their indexes."""
    failures: list[tuple[int, JobFailed]] = []
    if as_json:
        writer.write("[", 0)
    for index, r in enumerate(results):
        if isinstance(r, JobFailed):
            failures.append((index, r))
            text = "null" if as_json else f"error: {r.remote_type}: {r.remote_message}"
        else:
            text = json.dumps(r) if as_json else format_value(r)
        if as_json:
            writer.write(f", {text}" if index else text, index + 1)
        else:
            writer.write(f"{text}\n", index + 1)
    if as_json:
        writer.write("]\n", 0 if writer.bar is None else writer.bar.done)
    writer.close()
    return failures


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
