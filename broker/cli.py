"""`broker start`: run a broker in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import sys

import click

from client.credentials import read_secret_file
from client.logs import configure_logging, log_level_option
from client.tls import server_context
from protocol.defaults import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HANDSHAKE_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_FRAME_BYTES,
    MAX_OUTBOX_BYTES,
    SECRET_ENV,
)

from .server import BrokerServer


@click.group()
def main() -> None:
    """The sockpool broker."""


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port; 0 picks a free one.")
@click.option(
    "--max-frame-bytes", default=MAX_FRAME_BYTES, show_default=True, type=click.IntRange(1024),
    help="Largest frame accepted from a peer.",
)
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
    type=click.IntRange(1024), help="Bytes queued for one peer that does not read them before it is dropped.",
)
@click.option(
    "--handshake-timeout", "handshake_timeout_s", default=HANDSHAKE_TIMEOUT_S, show_default=True,
    type=click.FloatRange(0.1), help="Seconds a new connection has to finish its handshake.",
)
@log_level_option
def start(
    host: str,
    port: int,
    max_frame_bytes: int,
    name: str | None,
    secret_file: str | None,
    worker_secret_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    max_connections: int,
    max_outbox_bytes: int,
    handshake_timeout_s: float,
    log_level: str,
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
    server = BrokerServer(
        host, port, max_frame_bytes=max_frame_bytes, name=name, secret=secret, worker_secret=worker_secret,
        tls=tls, max_connections=max_connections, handshake_timeout_s=handshake_timeout_s,
        max_outbox_bytes=max_outbox_bytes,
    )
    for warning in server.exposure_warnings():
        # Also on stderr whatever the log level: this must not go unseen.
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    click.echo(f"listening on {server.address}")
    sys.stdout.flush()
    server.serve_forever()
