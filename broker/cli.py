"""`broker start`, `broker failed`: run a broker, or ask one what failed."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from client.credentials import read_secret_file
from client.logs import configure_logging, log_level_option
from client.tls import server_context
from protocol.defaults import (
    BROKER_ENV,
    DEFAULT_HOST,
    DEFAULT_PORT,
    HANDSHAKE_TIMEOUT_S,
    HEARTBEAT_S,
    MAX_CONNECTIONS,
    MAX_FRAME_BYTES,
    MAX_OUTBOX_BYTES,
    RESULT_TTL_S,
    SECRET_ENV,
    TLS_CA_ENV,
)

from .server import BrokerServer
from .store import DataDirBusy, Store, default_data_dir


@click.group()
def main() -> None:
    """The sockpool broker."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where jobs and results are kept [default: ~/.local/share/sockpool/broker-PORT].",
)
@click.option("--in-memory", is_flag=True, help="Keep nothing on disk: a restart loses queued jobs.")
@click.option("--fsync", is_flag=True, help="fsync every commit, to survive a power cut, not only a crash.")
@click.option(
    "--max-frame-bytes", default=MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
    help="Largest frame accepted from a peer.",
)
@click.option("--heartbeat-s", default=HEARTBEAT_S, show_default=True, type=click.FloatRange(0.05),
              help="Heartbeat interval; a peer silent for 4 intervals is dropped and its jobs requeued.")
@click.option("--result-ttl-s", default=RESULT_TTL_S, show_default=True, type=click.FloatRange(1),
              help="How long unacknowledged results and failed jobs are kept.")
@click.option("--name", default=None, help="Name shown to peers and in logs.")
@click.option(
    "--secret-file", envvar=SECRET_ENV, metavar="PATH",
    help=f"Admit only peers that prove they know the secret in this file [env: {SECRET_ENV}].",
)
@click.option(
    "--worker-secret-file", metavar="PATH",
    help="Admit workers only with the secret in this file (then --secret-file admits clients only).",
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
@click.option(
    "--handshake-timeout-s", default=HANDSHAKE_TIMEOUT_S, show_default=True, type=click.FloatRange(0.1),
    help="Seconds a new connection has to finish its handshake (TLS, hello, authentication).",
)
@log_level_option
def start(
    host: str, port: int, data_dir: Path | None, in_memory: bool, fsync: bool, max_frame_bytes: int,
    heartbeat_s: float, result_ttl_s: float, name: str | None,
    secret_file: str | None, worker_secret_file: str | None, tls_cert: str | None, tls_key: str | None,
    max_connections: int, max_outbox_bytes: int, handshake_timeout_s: float, log_level: str,
) -> None:
    """Start a broker. It prints 'listening on HOST:PORT' once it accepts connections."""
    configure_logging(log_level)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        secret = read_secret_file(secret_file) if secret_file else None
        worker_secret = read_secret_file(worker_secret_file) if worker_secret_file else None
        tls = server_context(tls_cert, tls_key) if tls_cert and tls_key else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if secret is not None and secret == worker_secret:
        raise click.UsageError("--worker-secret-file must hold a different secret from --secret-file")
    store = None
    if not in_memory:
        if data_dir is None and port == 0:
            raise click.UsageError("--port 0 needs --data-dir or --in-memory: the default data dir is per port")
        try:
            store = Store(data_dir or default_data_dir(port), fsync=fsync)
        except DataDirBusy as exc:
            raise click.ClickException(str(exc)) from exc
    server = BrokerServer(
        host, port, max_frame_bytes=max_frame_bytes, name=name, store=store,
        heartbeat_s=heartbeat_s, result_ttl_s=result_ttl_s,
        secret=secret, worker_secret=worker_secret, tls=tls, max_connections=max_connections,
        max_outbox_bytes=max_outbox_bytes, handshake_timeout_s=handshake_timeout_s,
    )
    for warning in server.exposure_warnings():
        # On stderr whatever the log level: this must not go unseen.
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    click.echo(f"listening on {server.address}")
    sys.stdout.flush()
    server.serve_forever()
    server.stop()


@main.command()
@click.option("--broker", "address", envvar=BROKER_ENV, metavar="HOST:PORT", help=f"Broker address [env: {BROKER_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--secret-file", envvar=SECRET_ENV, metavar="PATH", help=f"The broker's client secret [env: {SECRET_ENV}].")
@click.option("--tls-ca", envvar=TLS_CA_ENV, metavar="PATH", help=f"Connect with TLS, trusting this CA [env: {TLS_CA_ENV}].")
def failed(address: str | None, as_json: bool, secret_file: str | None, tls_ca: str | None) -> None:
    """List the jobs that failed for good (kept until their TTL)."""
    from client import Client, SockpoolError

    try:
        with Client(address, secret_file=secret_file, tls_ca=tls_ca) as client:
            jobs = client.failed_jobs()
    except (SockpoolError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(jobs))
        return
    for job in jobs:
        error = job["error"] if isinstance(job["error"], dict) else {"message": job["error"]}
        click.echo(f"{job['task']}{tuple(job['args'])}: {error.get('type', 'Error')}: {error.get('message', '')}"
                   f" (after {job['attempts']} attempts)")
    click.echo(f"{len(jobs)} failed jobs", err=True)
