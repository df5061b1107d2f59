"""The operator's commands: `broker failed`, `retry`, `cancel`, `pause`,
`resume` and `schedule ...`, each one request to the broker in the
operator role (they act on every session's jobs, not the caller's own).

Thin, as cli.py is: parse, send one request (`_as_operator`), print the
reply. cli.py adds `OPERATOR_COMMANDS` to the `broker` group; this module
knows nothing of `start` or `status`.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import click

from sockpool.cliargs import parse_arg
from sockpool.net.credentials import peer_options
from sockpool.protocol.defaults import BROKER_ENV, CONNECT_TIMEOUT_S, OPERATOR_SECRET_ENV, SECRET_ENV
from sockpool.protocol.messages import DEFAULT_QUEUE, MAX_PRIORITY, MIN_PRIORITY

from .schedules import DEFAULT_MISSED, MISSED_POLICIES

R = TypeVar("R")

_OPERATOR_SECRET_HELP = "The broker's operator secret (its --operator-secret-file, by default its worker secret)."


@click.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
def failed(address: str | None, as_json: bool, secret_file: str | None, tls_ca: str | None) -> None:
    """List every session's jobs that failed for good (kept until their TTL).

    Connects in the operator role, which needs the operator's secret: the
    list shows other people's job arguments. A client sees only its own
    session's failures (`Client.failed_jobs`).
    """
    from sockpool.net.credentials import Credentials
    from sockpool.net.request import ask, failed_job_rows
    from sockpool.protocol import ROLE_OPERATOR, FailedJobs, ListFailed, SockpoolError

    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
        jobs: list[dict] = []
        while True:
            reply = ask(address, ListFailed(offset=len(jobs)), FailedJobs, credentials, CONNECT_TIMEOUT_S * 2,
                        role=ROLE_OPERATOR, name="broker-failed")
            jobs += failed_job_rows(reply.jobs)
            if not reply.more or not reply.jobs:
                break
    except (SockpoolError, ValueError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(jobs))
        return
    for job in jobs:
        error = job["error"] if isinstance(job["error"], dict) else {"message": job["error"]}
        click.echo(f"{job.get('id', '-')}  {job['task']}{tuple(job['args'])}: {error.get('type', 'Error')}: "
                   f"{error.get('message', '')} (after {job['attempts']} attempts)"
                   + ("" if job.get("retryable", True) else " [arguments not kept: cannot be retried]"))
    click.echo(f"{len(jobs)} failed jobs (the first column is the ID `broker retry` takes)", err=True)


@click.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every failed job (of --task, if given).")
@click.option("--task", default="", help="With --all: only the failed jobs of this task.")
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
def retry(ids: tuple[int, ...], all_: bool, task: str, address: str | None, secret_file: str | None,
          tls_ca: str | None) -> None:
    """Send failed jobs again: the IDs `broker failed` shows, or --all [--task T].

    Each runs as a new job with fresh attempts, for the session that
    submitted it: a client still waiting, or `submit --attach`, gets the
    new result. Connects in the operator role, as `broker failed` does. A
    failed job whose arguments were too large to keep cannot be retried.
    """
    if bool(ids) == all_:
        raise click.UsageError("give IDs or --all, not both")
    if task and not all_:
        raise click.UsageError("--task goes with --all")
    from sockpool.protocol.control import Retry, RetryReply

    reply = _as_operator(address, secret_file, tls_ca, Retry(gids=list(ids), all=all_, task=task), RetryReply,
                         "broker-retry")
    retried, missing = reply.retried, reply.missing
    click.echo(f"queued {len(retried)} failed job(s) again")
    if missing:
        raise click.ClickException(
            f"not among the failed jobs (or too large to retry): {' '.join(map(str, missing))}"
        )


@click.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--session", default="", metavar="ID", help="Every unfinished job of this submission (session).")
@click.option("--task", default="", help="Every unfinished job of this task.")
@click.option("--queued-only", is_flag=True, help="Leave running jobs alone; cancel only those waiting.")
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
def cancel(ids: tuple[int, ...], session: str, task: str, queued_only: bool, address: str | None,
           secret_file: str | None, tls_ca: str | None) -> None:
    """Cancel jobs by broker ID, by --session, or by --task. Waiting jobs are
    removed (they never run); running ones are stopped (their pool process
    is killed and replaced) unless --queued-only. Each ends as Cancelled.
    Connects in the operator role, as `broker failed` does."""
    if sum(map(bool, (ids, session, task))) != 1:
        raise click.UsageError("give IDs, --session or --task (one of them)")
    from sockpool.protocol.control import Cancel, CancelReply, count_outcomes

    request = Cancel(session=session, gids=list(ids), task=task, stop=not queued_only)
    counts = count_outcomes(_as_operator(address, secret_file, tls_ca, request, CancelReply, "broker-cancel").outcomes)
    click.echo(f"cancelled {counts['cancelled']} waiting, stopped {counts['stopped']} running; "
               f"{counts['running']} left running, {counts['finished']} already finished")


def _as_operator(address: str | None, secret_file: str | None, tls_ca: str | None, request: Any,
                 reply_type: type[R], name: str) -> R:
    """Ask the broker one thing in the operator role; a failure is the command's error."""
    from sockpool.net.credentials import Credentials
    from sockpool.net.request import ask
    from sockpool.protocol import ROLE_OPERATOR, SockpoolError

    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
        return ask(address, request, reply_type, credentials, CONNECT_TIMEOUT_S * 2, role=ROLE_OPERATOR, name=name)
    except (SockpoolError, ValueError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc


def _run_control(address: str | None, secret_file: str | None, tls_ca: str | None, op: str,
                 args: dict[str, Any]) -> Any:
    """One control operation in the operator role (pausing a queue or
    changing a schedule acts for everyone); its value, or its refusal as the
    command's error."""
    from sockpool.protocol import Control, ControlReply

    reply = _as_operator(address, secret_file, tls_ca, Control(op, args), ControlReply, "broker-control")
    if not reply.ok:
        raise click.ClickException(reply.error)
    return reply.value


def _control_command(verb: str, op: str, argument: str, said: str, doc: str) -> click.Command:
    """A command `VERB ARGUMENT` that runs one control op on the named
    queue or schedule and echoes `said` with the name in its {}."""
    @click.command(verb, help=doc)
    @click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
    @peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
    @click.argument(argument)
    def command(address: str | None, secret_file: str | None, tls_ca: str | None, **named: str) -> None:
        _run_control(address, secret_file, tls_ca, op, {argument: named[argument]})
        click.echo(said.format(named[argument]))

    return command


pause = _control_command("pause", "pause_queue", "queue", "queue {} paused",
                         "Stop dispatching QUEUE's jobs; it keeps accepting them. Survives a restart.")
resume = _control_command("resume", "resume_queue", "queue", "queue {} resumed", "Dispatch QUEUE's jobs again.")


@click.group()
def schedule() -> None:
    """Periodic jobs, kept by the broker: add, list, pause, resume, remove."""


@schedule.command("add")
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
@click.option("--cron", required=True, metavar="EXPR", help='Cron expression, e.g. "*/5 * * * *" (6 fields: seconds first).')
@click.option("--timezone", default="UTC", show_default=True, metavar="TZ", help="IANA zone the expression is read in.")
@click.option("--queue", default=DEFAULT_QUEUE, show_default=True, help="Queue of each firing's job.")
@click.option("--priority", type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY), default=0, show_default=True)
@click.option("--missed", type=click.Choice(MISSED_POLICIES), default=DEFAULT_MISSED, show_default=True,
              help="Firings missed while the broker was down: run the latest once, or skip them.")
@click.option("--replace", is_flag=True, help="Replace a schedule of the same name.")
@click.argument("name")
@click.argument("task")
@click.argument("args", nargs=-1)
def schedule_add(
    address: str | None, secret_file: str | None, tls_ca: str | None, cron: str, timezone: str, queue: str,
    priority: int, missed: str, replace: bool, name: str, task: str, args: tuple[str, ...],
) -> None:
    """Run TASK(ARG...) at every fire time of --cron, as schedule NAME.

    Each ARG is read as a JSON literal where it parses as one; put `--`
    before ARGs that start with a dash."""
    row = _run_control(address, secret_file, tls_ca, "schedule_add", {
        "name": name, "cron": cron, "timezone": timezone, "task": task, "args": [parse_arg(a) for a in args],
        "kwargs": {}, "queue": queue, "priority": priority, "missed": missed, "replace": replace,
    })
    click.echo(f"schedule {name} added; next firing {row['next_fire_utc']}")


@schedule.command("list")
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@peer_options(_OPERATOR_SECRET_HELP, secret_envvar=[OPERATOR_SECRET_ENV, SECRET_ENV])
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_list(address: str | None, secret_file: str | None, tls_ca: str | None, as_json: bool) -> None:
    """Every schedule with its next fire time and the outcome of its last run."""
    from .report import schedule_table

    rows = _run_control(address, secret_file, tls_ca, "schedule_list", {})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo("\n".join(schedule_table(rows)))
    else:
        click.echo("no schedules")


for _verb, _op, _doc in [
    ("pause", "schedule_pause", "No firings of NAME until it is resumed."),
    ("resume", "schedule_resume", "Fire NAME again, from now on (firings while paused are not owed)."),
    ("remove", "schedule_remove", "Delete NAME; a firing already queued still runs."),
]:
    schedule.add_command(_control_command(_verb, _op, "name", f"schedule {{}}: {_verb} done", _doc))


OPERATOR_COMMANDS: list[click.Command] = [failed, retry, cancel, pause, resume, schedule]
