"""`broker start`: run a broker. `broker status`: ask one how it is doing.

The operator's commands (`failed`, `retry`, `cancel`, `pause`, `resume`,
`schedule ...`) live in operator_cli.py and join the `broker` group here."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from sockpool.net.credentials import peer_options, read_secret_file
from sockpool.envvars import CONTEXT_SETTINGS, show_envvars
from sockpool.logs import configure_logging, log_level_option
from sockpool.net.tls import server_context
from sockpool.protocol.defaults import (
    BROKER_ENV,
    CONNECT_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    HANDSHAKE_TIMEOUT_S,
    HEARTBEAT_S,
    MAX_CONNECTIONS,
    MAX_FRAME_BYTES,
    MAX_OUTBOX_BYTES,
    MAX_QUEUED_JOBS,
    MAX_SESSION_BYTES,
    MAX_SESSION_JOBS,
    MAX_STORE_BYTES,
    RESULT_TTL_S,
    OPERATOR_SECRET_ENV,
    SECRET_ENV,
    SESSION_GRACE_S,
    UNSERVED_GRACE_S,
    UNSERVED_TIMEOUT_S,
)

from .limits import LimitSpec, parse_limit
from .operator_cli import OPERATOR_COMMANDS
from .quota import Quota
from .collector import tune_collector
from .server import BrokerServer
from .store import DataDirBusy, GroupCommitStore, Store, default_data_dir, open_postgres
from .store.holds import HOLD_S


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """The sockpool broker."""


def _postgres_store(url: str) -> GroupCommitStore:
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.UsageError(f"--store {url!r}: expected a postgresql:// URL")
    try:
        return open_postgres(url)
    except ImportError as exc:
        raise click.ClickException(f"--store needs psycopg: pip install 'sockpool[postgres]' ({exc})") from exc
    except Exception as exc:  # psycopg.Error, SchemaTooNew: say what and stop
        raise click.ClickException(f"cannot use the store {_redacted(url)}: {str(exc).strip()}") from exc


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, where = rest.rpartition("@")
    return f"{scheme}{sep}{creds.split(':')[0]}:***@{where}" if at and ":" in creds else url


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where jobs and results are kept [default: ~/.local/share/sockpool/broker-PORT].",
)
@click.option(
    "--store", "store_url", metavar="postgresql://...", default=None,
    help="Keep jobs in this PostgreSQL database instead of --data-dir: several brokers on one "
         "database, one active, the others standing by (pip install 'sockpool[postgres]').",
)
@click.option(
    "--advertise", metavar="HOST:PORT", default=None,
    help="With --store: where peers reach this broker, named by standbys to the peers they refuse "
         "[default: the bound address; the host name for 0.0.0.0].",
)
@click.option("--in-memory", is_flag=True, help="Keep nothing on disk: a restart loses queued jobs.")
@click.option("--fsync", is_flag=True, help="fsync every commit, to survive a power cut, not only a crash.")
@click.option(
    "--finish-hold-s", default=HOLD_S, show_default=True, type=click.FloatRange(0, 60),
    help="How long a finished job's outcome may wait unwritten for its client's acknowledgement, which "
         "deletes its row (0: write every finish at once). A kill -9 in that window makes such a job run "
         "again; its client still gets its result once.",
)
@click.option(
    "--max-frame-bytes", default=MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
    help="Largest frame accepted from a peer.",
)
@click.option("--heartbeat-s", default=HEARTBEAT_S, show_default=True, type=click.FloatRange(0.05),
              help="Heartbeat interval; a peer silent for 4 intervals is dropped and its jobs requeued.")
@click.option("--result-ttl-s", default=RESULT_TTL_S, show_default=True, type=click.FloatRange(1),
              help="How long unacknowledged results and failed jobs are kept.")
@click.option("--session-grace-s", default=SESSION_GRACE_S, show_default=True, type=click.FloatRange(1),
              help="A client gone this long cannot come back: its results are dropped, except detached jobs'.")
@click.option("--unserved-grace-s", default=UNSERVED_GRACE_S, show_default=True, type=click.FloatRange(0),
              help="A job whose task no connected worker serves fails with UnknownTask once none has come "
                   "for this long since it was submitted and since the last worker joined.")
@click.option("--unserved-timeout-s", default=UNSERVED_TIMEOUT_S, show_default=True, type=click.FloatRange(0),
              help="...and in any case after this long (the wait when no worker is connected at all).")
@click.option("--name", default=None, help="Name shown to peers and in logs.")
@click.option(
    "--secret-file", envvar=SECRET_ENV, metavar="PATH",
    help="Admit only peers that prove they know the secret in this file.",
)
@click.option(
    "--worker-secret-file", metavar="PATH",
    help="Admit workers only with the secret in this file (then --secret-file admits clients only).",
)
@click.option(
    "--operator-secret-file", metavar="PATH",
    help="Admit the operator role (`broker failed`: every session's failed jobs) only with the secret "
         "in this file [default: the worker secret].",
)
@click.option("--tls-cert", metavar="PATH", help="Serve TLS with this certificate (chain) in PEM.")
@click.option("--tls-key", metavar="PATH", help="The private key of --tls-cert, in PEM.")
@click.option(
    "--max-connections", default=MAX_CONNECTIONS, show_default=True, type=click.IntRange(1),
    help="Connections served at once; more are closed at once.",
)
@click.option(
    "--max-queued-bytes", "max_outbox_bytes", default=MAX_OUTBOX_BYTES, show_default=True,
    type=click.IntRange(1024),
    help="Bytes waiting for one peer past which, if it reads nothing for 4 heartbeats, it is dropped.",
)
@click.option("--max-queued-jobs", default=MAX_QUEUED_JOBS, show_default=True, type=click.IntRange(0),
              help="Unfinished jobs the broker holds in all; past it a submit is refused 'broker full' (0: no limit).")
@click.option("--max-store-bytes", default=MAX_STORE_BYTES, show_default=True, type=click.IntRange(0),
              help="Bytes unfinished jobs may take in all, 512 a job plus its arguments (0: no limit).")
@click.option("--max-session-jobs", default=MAX_SESSION_JOBS, show_default=True, type=click.IntRange(0),
              help="Unfinished jobs one client session may have (0: no limit).")
@click.option("--max-session-bytes", default=MAX_SESSION_BYTES, show_default=True, type=click.IntRange(0),
              help="Bytes one client session's unfinished jobs may take (0: no limit).")
@click.option(
    "--handshake-timeout-s", default=HANDSHAKE_TIMEOUT_S, show_default=True, type=click.FloatRange(0.1),
    help="Seconds a new connection has to finish its handshake (TLS, hello, authentication).",
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="Serve Prometheus /metrics and the dashboard on this HTTP port of --host; 0 picks a free one.",
)
@click.option(
    "--metrics-host", "metrics_hosts", multiple=True, metavar="NAME",
    help="Another DNS name the HTTP port answers to (repeatable); besides IP addresses, localhost and "
         "this machine's names, other Host headers are refused, against DNS rebinding.",
)
@click.option(
    "--limit", "limit_specs", multiple=True, metavar="NAME=N[/PERIOD]",
    help="At most N jobs of task NAME (or of limit key NAME) run at once across the cluster; "
         "N/PERIOD (like 10/1s, 100/1m): at most N start per PERIOD. Repeatable.",
)
@log_level_option
def start(
    host: str, port: int, data_dir: Path | None, store_url: str | None, advertise: str | None,
    in_memory: bool, fsync: bool, finish_hold_s: float, max_frame_bytes: int,
    heartbeat_s: float, result_ttl_s: float, session_grace_s: float, unserved_grace_s: float, unserved_timeout_s: float,
    name: str | None,
    secret_file: str | None, worker_secret_file: str | None, operator_secret_file: str | None, tls_cert: str | None, tls_key: str | None,
    max_connections: int, max_outbox_bytes: int,
    max_queued_jobs: int, max_store_bytes: int, max_session_jobs: int, max_session_bytes: int,
    handshake_timeout_s: float, metrics_port: int | None, metrics_hosts: tuple[str, ...],
    limit_specs: tuple[str, ...], log_level: str,
) -> None:
    """Start a broker. It prints 'listening on HOST:PORT' once it accepts
    connections, then 'metrics on HOST:PORT' if it serves metrics."""
    configure_logging(log_level)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    limits: dict[str, LimitSpec] = {}
    for text in limit_specs:
        try:
            name, spec = parse_limit(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--limit") from exc
        limits[name] = spec
    try:
        secret = read_secret_file(secret_file) if secret_file else None
        worker_secret = read_secret_file(worker_secret_file) if worker_secret_file else None
        operator_secret = read_secret_file(operator_secret_file) if operator_secret_file else None
        tls = server_context(tls_cert, tls_key) if tls_cert and tls_key else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if secret is not None and secret == worker_secret:
        raise click.UsageError("--worker-secret-file must hold a different secret from --secret-file")
    if secret is not None and secret == operator_secret:
        raise click.UsageError("--operator-secret-file must hold a different secret from --secret-file")
    store: GroupCommitStore | None = None
    if store_url is not None:
        if in_memory or data_dir is not None:
            raise click.UsageError("--store keeps jobs in PostgreSQL: leave out --in-memory and --data-dir")
        store = _postgres_store(store_url)
    elif not in_memory:
        if data_dir is None and port == 0:
            raise click.UsageError("--port 0 needs --data-dir or --in-memory: the default data dir is per port")
        try:
            store = Store(data_dir or default_data_dir(port), fsync=fsync)
        except DataDirBusy as exc:
            raise click.ClickException(str(exc)) from exc
    if store is not None:
        store.hold_finishes(finish_hold_s)
    server = BrokerServer(
        host, port, max_frame_bytes=max_frame_bytes, name=name, store=store, advertise=advertise,
        heartbeat_s=heartbeat_s, result_ttl_s=result_ttl_s,
        session_grace_s=session_grace_s, unserved_grace_s=unserved_grace_s, unserved_timeout_s=unserved_timeout_s,
        secret=secret, worker_secret=worker_secret, operator_secret=operator_secret, tls=tls, max_connections=max_connections,
        max_outbox_bytes=max_outbox_bytes, handshake_timeout_s=handshake_timeout_s, limits=limits,
        quota=Quota(max_queued_jobs, max_store_bytes, max_session_jobs, max_session_bytes),
    )
    http = None
    if metrics_port is not None:
        from .observe import ObserveServer  # only a broker asked for metrics needs prometheus-client

        try:
            http = ObserveServer(host, metrics_port, server.status, allowed_hosts=metrics_hosts)
        except OSError as exc:
            server.stop()
            raise click.ClickException(f"cannot serve metrics on {host}:{metrics_port}: {exc}") from exc
    warnings = server.exposure_warnings()
    if http is not None:
        from .observe import exposure_warning

        warnings += [w for w in [exposure_warning(host, http.address)] if w]
    for warning in warnings:
        # On stderr whatever the log level: this must not go unseen.
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    click.echo(f"listening on {server.address}")
    if http is not None:
        http.start()
        click.echo(f"metrics on {http.address}")
    sys.stdout.flush()
    tune_collector()
    try:
        server.serve_forever()
    finally:
        if http is not None:
            http.stop()
        server.stop()


@main.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help="Broker address.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@peer_options("The broker's client secret (with --operator: its operator secret).")
@click.option("--operator", is_flag=True,
              help="Connect as the operator (secret: --secret-file, else $SOCKPOOL_OPERATOR_SECRET_FILE), "
                   "to see every recent failure's message.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=CONNECT_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the broker.")
@click.pass_context
def status(
    ctx: click.Context, address: str | None, as_json: bool, secret_file: str | None, tls_ca: str | None,
    operator: bool, timeout: float,
) -> None:
    """Show a broker's workers, queue depth, totals, throughput and counts per task.

    Asks the broker over the protocol, as a client with the client's
    credentials. Counts are calls: a map chunk of N items counts N. Recent
    failures show their messages (which may quote a job's arguments) only
    with --operator.
    """
    from sockpool.net.credentials import Credentials
    from sockpool.net.request import ask
    from sockpool.protocol import ROLE_CLIENT, ROLE_OPERATOR, SockpoolError, StatusReply, StatusRequest

    from .report import format_status

    if operator and ctx.get_parameter_source("secret_file") != click.core.ParameterSource.COMMANDLINE:
        secret_file = os.environ.get(OPERATOR_SECRET_ENV) or secret_file
    try:
        credentials = Credentials.from_files(secret_file, tls_ca)
        role = ROLE_OPERATOR if operator else ROLE_CLIENT
        report = ask(address, StatusRequest(), StatusReply, credentials, timeout, role=role, name="broker-status").status
    except (SockpoolError, ValueError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


for _command in OPERATOR_COMMANDS:
    main.add_command(_command)


show_envvars(main)
